namespace Teal.Core.Errors;

/// <summary>
/// A refusal or a user/environment error: something the operator can fix. Carries a stable
/// <see cref="Code"/> (for scripts and the API's ProblemDetails), a one-line message and a hint
/// saying how to fix it. Anything that is not a <see cref="TealException"/> is a bug.
/// </summary>
public sealed class TealException : Exception
{
    public TealException(string code, string message, string? hint = null, Exception? innerException = null)
        : base(message, innerException)
    {
        Code = code;
        Hint = hint;
    }

    /// <summary>Stable, dotted error code such as <c>deployment.duplicate-name</c>.</summary>
    public string Code { get; }

    /// <summary>What the operator can do about it; null when there is nothing useful to say.</summary>
    public string? Hint { get; }

    /// <summary>The kind of refusal, which decides the HTTP status the API answers with.</summary>
    public TealErrorKind Kind { get; init; } = TealErrorKind.Invalid;

    /// <summary>
    /// The cause may go away by itself (a server restarting, a connection lost): work past the
    /// switchover's point of no return retries it with backoff instead of stopping.
    /// </summary>
    public bool Transient { get; init; }

    /// <summary>When the refusal comes from checks, all of their results (passes included).</summary>
    public Guardrails.CheckReport? Report { get; init; }
}

/// <summary>How a <see cref="TealException"/> maps onto the API: 400, 404, 409, 422 or 503.</summary>
public enum TealErrorKind
{
    Invalid,
    NotFound,
    Conflict,
    Refused,
    Unavailable,
}
