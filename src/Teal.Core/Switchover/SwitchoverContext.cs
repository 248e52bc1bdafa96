using System.Collections.Concurrent;
using System.Globalization;
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

    // What steps decide or learn. Journaled with every entry (JournalData) and given back to the
    // steps when Teal recovers after a crash (Restore), so a recovery finishes the same action.

    /// <summary>The names the flip moves, chosen before its journal entry (<see cref="Steps.FlipStep"/>).</summary>
    public FlipNames? Names { get; set; }

    /// <summary>Blue's final position (after the marker), and the engine's details of it.</summary>
    public string? BlueFinalPosition { get; set; }

    public IReadOnlyDictionary<string, string> BlueFinalDetails { get; set; } = new Dictionary<string, string>();

    /// <summary>Green's position when it opened for writes.</summary>
    public string? GreenPosition { get; set; }

    /// <summary>The engine's details of <see cref="GreenPosition"/> (MariaDB: binlog file, position, GTID).</summary>
    public IReadOnlyDictionary<string, string> GreenPositionDetails { get; set; } = new Dictionary<string, string>();

    /// <summary>How many sequences were set on green.</summary>
    public int? SequencesSynced { get; set; }

    /// <summary>Roles that log in to blue but will not log in to green with the same password (sync-sequences finds them).</summary>
    public IReadOnlyList<string>? RolesNotLoggingIn { get; set; }

    /// <summary>Events to record once clients write again (persisting them inside the write pause would lengthen it).</summary>
    public ConcurrentQueue<PendingEvent> Events { get; } = new();

    public TimeSpan Remaining => Deadline - Time.GetUtcNow();

    /// <summary>
    /// The side this cutover leaves (production): the deployment's blue for a switchover, its
    /// green for a switchback (<see cref="Deployment.Reversed"/>). The link is built the same way
    /// round, so every step reads "blue" as the side being left and "green" as the one opened.
    /// </summary>
    public string BlueName => Deployment.Production;

    public string GreenName => Deployment.Standby;

    /// <summary>This run is a switchback (green → the old blue).</summary>
    public bool IsSwitchback => Deployment.Reversed;

    /// <summary>
    /// Whether the cutover starts replication back from the side it opens to the side it
    /// leaves: a switchover when the deployment asked for it, a switchback always (that is
    /// forward replication re-established).
    /// </summary>
    public bool StartsReverseReplication => Deployment.Reversed || Deployment.ReverseReplication;

    /// <summary>Where the slot for replication back to the side being left started (made on green before the pause); null when none was made.</summary>
    public string? ReverseStartPosition { get; set; }

    /// <summary>Green's position once it had applied blue's final one, before any client write; read when the cutover makes slots on green (CDC, reverse replication).</summary>
    public string? GreenCaughtUpPosition { get; set; }

    /// <summary>
    /// Where replication back to the side being left starts: green's position once caught up
    /// (the slot was made before the pause, while green still applied blue's writes); the slot's
    /// own start for a switchover journaled without that position. Null when none starts.
    /// </summary>
    public string? ReverseReplicationStart => ReverseStartPosition is null ? null : GreenCaughtUpPosition ?? ReverseStartPosition;

    /// <summary>The CDC slots open-green made on green, for the event that tells consumers where to go on.</summary>
    public IReadOnlyList<CdcSlotCreated> CdcSlotsCreated { get; set; } = [];

    public void Record(string kind, string message, IReadOnlyDictionary<string, string>? data = null) =>
        Events.Enqueue(new PendingEvent(Time.GetUtcNow(), kind, message, data ?? new Dictionary<string, string>()));

    /// <summary>What the steps decided so far, as the journal stores it.</summary>
    public Dictionary<string, string> JournalData()
    {
        var data = new Dictionary<string, string>(StringComparer.Ordinal);
        if (Names is { } names)
        {
            data[SwitchoverData.BlueName] = names.Blue;
            data[SwitchoverData.GreenName] = names.Green;
            data[SwitchoverData.BlueNewName] = names.BlueNewName;
        }

        Put(data, SwitchoverData.BlueFinalPosition, BlueFinalPosition);
        Put(data, SwitchoverData.GreenPosition, GreenPosition);
        Put(data, SwitchoverData.ReverseStartPosition, ReverseStartPosition);
        Put(data, SwitchoverData.GreenCaughtUpPosition, GreenCaughtUpPosition);
        Put(data, SwitchoverData.SequencesSynced, SequencesSynced?.ToString(CultureInfo.InvariantCulture));
        Put(data, SwitchoverData.RolesNotLoggingIn, RolesNotLoggingIn is null ? null : string.Join('\n', RolesNotLoggingIn));
        foreach (var (key, value) in BlueFinalDetails)
        {
            data[SwitchoverData.BlueFinalDetail + key] = value;
        }

        foreach (var (key, value) in GreenPositionDetails)
        {
            data[SwitchoverData.GreenPositionDetail + key] = value;
        }

        return data;
    }

    /// <summary>Takes back what a journal entry recorded (recovery after a crash).</summary>
    public void Restore(IReadOnlyDictionary<string, string> data)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (data.TryGetValue(SwitchoverData.BlueName, out var blue) && data.TryGetValue(SwitchoverData.GreenName, out var green) && data.TryGetValue(SwitchoverData.BlueNewName, out var blueNew))
        {
            Names = new FlipNames(blue, green, blueNew);
        }

        BlueFinalPosition = data.GetValueOrDefault(SwitchoverData.BlueFinalPosition) ?? BlueFinalPosition;
        GreenPosition = data.GetValueOrDefault(SwitchoverData.GreenPosition) ?? GreenPosition;
        ReverseStartPosition = data.GetValueOrDefault(SwitchoverData.ReverseStartPosition) ?? ReverseStartPosition;
        GreenCaughtUpPosition = data.GetValueOrDefault(SwitchoverData.GreenCaughtUpPosition) ?? GreenCaughtUpPosition;
        if (data.TryGetValue(SwitchoverData.SequencesSynced, out var synced) && int.TryParse(synced, CultureInfo.InvariantCulture, out var count))
        {
            SequencesSynced = count;
        }

        if (data.TryGetValue(SwitchoverData.RolesNotLoggingIn, out var roles))
        {
            RolesNotLoggingIn = roles.Length == 0 ? [] : roles.Split('\n');
        }

        var details = data.Where(d => d.Key.StartsWith(SwitchoverData.BlueFinalDetail, StringComparison.Ordinal)).ToDictionary(d => d.Key[SwitchoverData.BlueFinalDetail.Length..], d => d.Value);
        if (details.Count > 0)
        {
            BlueFinalDetails = details;
        }

        var greenDetails = data.Where(d => d.Key.StartsWith(SwitchoverData.GreenPositionDetail, StringComparison.Ordinal)).ToDictionary(d => d.Key[SwitchoverData.GreenPositionDetail.Length..], d => d.Value);
        if (greenDetails.Count > 0)
        {
            GreenPositionDetails = greenDetails;
        }
    }

    private static void Put(Dictionary<string, string> data, string key, string? value)
    {
        if (value is not null)
        {
            data[key] = value;
        }
    }
}

/// <summary>The flip's names: blue's (which green takes), green's, and the one blue takes.</summary>
public sealed record FlipNames(string Blue, string Green, string BlueNewName);

/// <summary>An event recorded during the write pause, persisted after it.</summary>
public sealed record PendingEvent(DateTimeOffset At, string Kind, string Message, IReadOnlyDictionary<string, string> Data);

/// <summary>Keys of a journal entry's data (the journal's format; <see cref="SwitchoverContext.JournalData"/> writes them).</summary>
public static class SwitchoverData
{
    public const string BlueName = "blueName";
    public const string GreenName = "greenName";
    public const string BlueNewName = "blueNewName";
    public const string BlueFinalPosition = "blueFinalPosition";
    public const string BlueFinalDetail = "blueFinal.";
    public const string GreenPosition = "greenPosition";
    public const string GreenPositionDetail = "greenPosition.";
    public const string SequencesSynced = "sequencesSynced";
    public const string ReverseStartPosition = "reverseStartPosition";
    public const string RolesNotLoggingIn = "rolesNotLoggingIn";
    public const string GreenCaughtUpPosition = "greenCaughtUpPosition";
}
