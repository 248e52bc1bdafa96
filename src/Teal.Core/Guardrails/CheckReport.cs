using Teal.Core.Errors;

namespace Teal.Core.Guardrails;

/// <summary>All results of one round of checks, in the order they ran.</summary>
public sealed record CheckReport(IReadOnlyList<CheckResult> Results)
{
    public bool Passed => Results.All(r => r.Passed);

    public IEnumerable<CheckResult> Failures => Results.Where(r => !r.Passed);

    /// <summary>
    /// Throws a refusal naming every failed check (not just the first), so the operator can fix
    /// them all in one go.
    /// </summary>
    public void ThrowIfFailed(string code, string what)
    {
        var failures = Failures.ToList();
        if (failures.Count == 0)
        {
            return;
        }

        var message = failures.Count == 1
            ? $"{what}: {failures[0].Message}"
            : $"{what}: {failures.Count} checks failed: " + string.Join("; ", failures.Select(f => $"{f.Name}: {f.Message}"));
        var hint = string.Join(" ", failures.Select(f => f.Hint).Where(h => !string.IsNullOrEmpty(h)));
        throw new TealException(code, message, hint.Length == 0 ? null : hint) { Kind = TealErrorKind.Refused, Report = this };
    }
}
