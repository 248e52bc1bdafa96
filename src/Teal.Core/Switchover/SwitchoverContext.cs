using System.Collections.Concurrent;
using Teal.Core.Deployments;
using Teal.Core.Endpoints;
using Teal.Core.Engines;
using Teal.Core.State;

namespace Teal.Core.Switchover;

/// <summary>Everything the steps of one switchover share.</summary>
public sealed class SwitchoverContext
{
    public required string SwitchoverId { get; init; }

    /// <summary>The deployment as it was when the switchover started.</summary>
    public required Deployment Deployment { get; init; }

    /// <summary>The deployment as the switchover has changed it so far (names swap at the flip).</summary>
    public Deployment Current { get; set; } = null!;

    public required IReplicationLink Link { get; init; }

    /// <summary>Endpoints routed to blue, which the switchover pauses, drains, flips and resumes.</summary>
    public required IReadOnlyList<IEndpoint> Endpoints { get; init; }

    public required SwitchoverOptions Options { get; init; }

    public required IStateStore State { get; init; }

    public required TimeProvider Time { get; init; }

    /// <summary>Before this moment every step up to the point of no return must be done.</summary>
    public required DateTimeOffset Deadline { get; init; }

    /// <summary>
    /// Values steps decide or learn (names chosen at the flip, blue's final position); journaled
    /// with every entry, and given back to the steps when Teal recovers after a crash.
    /// </summary>
    public ConcurrentDictionary<string, string> Data { get; } = new();

    /// <summary>Events to record once clients write again (persisting them inside the write pause would lengthen it).</summary>
    public ConcurrentQueue<PendingEvent> Events { get; } = new();

    public TimeSpan Remaining => Deadline - Time.GetUtcNow();

    public string BlueName => Deployment.Blue;

    public string GreenName => Deployment.Green;

    public void Record(string kind, string message, IReadOnlyDictionary<string, string>? data = null) =>
        Events.Enqueue(new PendingEvent(Time.GetUtcNow(), kind, message, data ?? new Dictionary<string, string>()));
}

/// <summary>An event recorded during the write pause, persisted after it.</summary>
public sealed record PendingEvent(DateTimeOffset At, string Kind, string Message, IReadOnlyDictionary<string, string> Data);

/// <summary>Keys of <see cref="SwitchoverContext.Data"/>.</summary>
public static class SwitchoverData
{
    public const string BlueName = "blueName";
    public const string GreenName = "greenName";
    public const string BlueNewName = "blueNewName";
    public const string BlueFinalPosition = "blueFinalPosition";
    public const string GreenPosition = "greenPosition";
    public const string DrainDeadline = "drainDeadline";
    public const string TimeoutSeconds = "timeoutSeconds";
}
