namespace Teal.Core.Guardrails;

/// <summary>
/// The outcome of one readiness check (a prerequisite at create time or a guardrail at
/// switchover). Expected "no" is data, not an exception: every check runs and every result is
/// reported, each failure with the exact fix in <see cref="Hint"/>.
/// </summary>
public sealed record CheckResult(string Name, CheckOutcome Outcome, string Message, string? Hint = null)
{
    /// <summary>False only for <see cref="CheckOutcome.Fail"/>; a warning does not refuse.</summary>
    public bool Passed => Outcome != CheckOutcome.Fail;

    public static CheckResult Pass(string name, string message) => new(name, CheckOutcome.Pass, message);

    public static CheckResult Warn(string name, string message, string? hint = null) => new(name, CheckOutcome.Warn, message, hint);

    public static CheckResult Fail(string name, string message, string hint) => new(name, CheckOutcome.Fail, message, hint);
}

public enum CheckOutcome
{
    Pass,
    Warn,
    Fail,
}
