namespace Teal.Core.Switchover;

public enum SwitchoverOutcome
{
    InProgress,
    Completed,
    /// <summary>Refused by a failure or the timeout before the point of no return; everything was undone.</summary>
    RolledBack,
    /// <summary>
    /// A step after the point of no return failed with an error that does not pass by itself:
    /// nothing runs it; the operator fixes the cause and resumes (<c>teal switchover ID --resume</c>).
    /// </summary>
    Stopped,
}

/// <summary>The last switchover of a deployment, as the API shows it (<c>switchover</c> field).</summary>
public sealed record SwitchoverState(string Id, DateTimeOffset StartedAt, int TimeoutSeconds)
{
    public SwitchoverOutcome Outcome { get; init; } = SwitchoverOutcome.InProgress;

    /// <summary>The step running now (or the last one that ran).</summary>
    public string? Phase { get; init; }

    public string? Reason { get; init; }

    /// <summary>What the operator can do (a stopped switchover: the fix, then <c>--resume</c>).</summary>
    public string? Hint { get; init; }

    public IReadOnlyList<PhaseTiming> Phases { get; init; } = [];

    /// <summary>Blue's position after the final marker (PostgreSQL LSN).</summary>
    public string? BlueFinalPosition { get; init; }

    /// <summary>Green's position when it opened for writes.</summary>
    public string? GreenPosition { get; init; }

    public DateTimeOffset? FinishedAt { get; init; }

    /// <summary>Milliseconds from pausing the endpoints to resuming them: the write pause clients saw.</summary>
    public double? WritePauseMilliseconds { get; init; }

    /// <summary>When the endpoints were paused (start of the write pause), to line it up with application logs.</summary>
    public DateTimeOffset? PausedAt { get; init; }

    /// <summary>When the endpoints had resumed (end of the write pause).</summary>
    public DateTimeOffset? ResumedAt { get; init; }
}

/// <summary>How long one step took, and how it ended (done, undone, failed).</summary>
public sealed record PhaseTiming(string Step, string Result, double Milliseconds);
