using Teal.Core.Errors;

namespace Teal.Core.Switchover;

/// <summary>A switchover as requested: its timeout, drain budget and guardrail thresholds.</summary>
public sealed record SwitchoverOptions
{
    public const int MinTimeoutSeconds = 30;
    public const int MaxTimeoutSeconds = 3600;
    public const int DefaultTimeoutSeconds = 300;

    /// <summary>Everything before the point of no return must finish within this, or all is undone.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(DefaultTimeoutSeconds);

    /// <summary>How long in-flight transactions get to finish before their sessions are closed.</summary>
    public TimeSpan DrainBudget { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>A write transaction on blue older than this refuses the switchover.</summary>
    public TimeSpan LongTransactionThreshold { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Accept that the fence locks out the other databases on blue's server too (<c>--fence-whole-server</c>).</summary>
    public bool FenceWholeServer { get; init; }

    public static SwitchoverOptions Create(int? timeoutSeconds, double? drainBudgetSeconds = null, double? longTransactionSeconds = null)
    {
        var timeout = timeoutSeconds ?? DefaultTimeoutSeconds;
        if (timeout is < MinTimeoutSeconds or > MaxTimeoutSeconds)
        {
            throw new TealException(
                "switchover.invalid-timeout",
                $"--switchover-timeout {timeout} is out of range",
                $"give {MinTimeoutSeconds}–{MaxTimeoutSeconds} seconds (default {DefaultTimeoutSeconds})");
        }

        var drain = drainBudgetSeconds ?? 5;
        if (drain is < 0 or > 600 || drain >= timeout)
        {
            throw new TealException("switchover.invalid-drain-budget", $"--drain-budget {drain} is out of range", "give 0–600 seconds, less than the switchover timeout");
        }

        var threshold = longTransactionSeconds ?? 10;
        if (threshold <= 0)
        {
            throw new TealException("switchover.invalid-threshold", $"--long-transaction-threshold {threshold} must be positive", "give a number of seconds, e.g. 10");
        }

        return new SwitchoverOptions
        {
            Timeout = TimeSpan.FromSeconds(timeout),
            DrainBudget = TimeSpan.FromSeconds(drain),
            LongTransactionThreshold = TimeSpan.FromSeconds(threshold),
        };
    }
}
