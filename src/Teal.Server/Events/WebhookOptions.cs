namespace Teal.Server.Events;

/// <summary>How webhook deliveries are retried and how much may wait for a failing receiver.</summary>
public sealed record WebhookOptions
{
    /// <summary>Tries per event, the first included; then the event is given up on (and logged).</summary>
    public int MaxAttempts { get; init; } = 8;

    /// <summary>Wait before the second try; doubled for each further try up to <see cref="MaxBackoff"/>.</summary>
    public TimeSpan InitialBackoff { get; init; } = TimeSpan.FromSeconds(1);

    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>One request's budget: a receiver that hangs is a failed try, not a stuck queue.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Events waiting per webhook. When a receiver is down long enough to fill it, the oldest are
    /// dropped (and counted): memory stays bounded and nothing upstream ever waits for a receiver.
    /// </summary>
    public int QueueCapacity { get; init; } = 1000;

    /// <summary>The wait before try <paramref name="attempt"/> (2, 3, …): exponential, capped.</summary>
    public TimeSpan BackoffBefore(int attempt)
    {
        var factor = Math.Pow(2, Math.Max(0, attempt - 2));
        return TimeSpan.FromTicks((long)Math.Min(MaxBackoff.Ticks, InitialBackoff.Ticks * factor));
    }
}
