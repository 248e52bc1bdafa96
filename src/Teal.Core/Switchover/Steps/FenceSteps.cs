using System.Globalization;
using Teal.Core.Engines;

namespace Teal.Core.Switchover.Steps;

/// <summary>Step 3b: blue refuses writes from every role but Teal's own session.</summary>
public sealed class FenceBlueStep : ISwitchoverStep
{
    public string Name => "fence-blue";

    public string Description => "fence blue: every role becomes read-only (Teal keeps a writable session for the marker)";

    public bool UndoReopensBlue => true;

    /// <summary>
    /// The undo puts back what the fence recorded on the server (PostgreSQL: this deployment's
    /// holder, the roles it took LOGIN from, saved overrides; MariaDB: locked accounts and
    /// settings), so on a blue this step never fenced it has nothing to put back; that undo
    /// already runs after a crash between the fence's journal entry and the fence. So its start
    /// goes in the pause's flushed commit: one disk flush fewer inside the write pause.
    /// </summary>
    public bool JournaledAhead => true;

    /// <summary>
    /// What the fence can do before it takes effect (PostgreSQL: blue's fenced pg_hba.conf and
    /// its read-only default written, with their disk flushes, and role and database overrides
    /// of that default reset) is done while the endpoints pause and drain, off the write pause's
    /// critical path: clients cannot notice it before the fence's reload, and its undo is the
    /// fence's.
    /// </summary>
    public bool WorksAhead => true;

    public Task WorkAheadAsync(SwitchoverContext context, CancellationToken cancellationToken) =>
        context.Link.PrepareFenceAsync(Side.Blue, cancellationToken);

    public Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken) =>
        context.Link.FenceAsync(Side.Blue, cancellationToken);

    public Task UndoAsync(SwitchoverContext context, CancellationToken cancellationToken) =>
        context.Link.UnfenceAsync(Side.Blue, cancellationToken);
}

/// <summary>Step 3c: sessions connected to blue directly finish their transaction within the budget, or are terminated.</summary>
public sealed class DrainBlueStep : ISwitchoverStep
{
    public bool NothingToUndo => true;

    public string Name => "drain-blue";

    public string Description => "let transactions open on blue finish within the drain budget, then terminate their sessions";

    public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        var result = await context.Link.DrainAsync(Side.Blue, context.Options.DrainBudget, cancellationToken);
        if (result.Terminated > 0)
        {
            context.Record(
                Events.EventKinds.SwitchoverPhase,
                $"{result.Terminated} session(s) on blue still in a transaction after the {context.Options.DrainBudget.TotalSeconds:0.#} s drain budget were terminated",
                new Dictionary<string, string> { ["terminated"] = result.Terminated.ToString(CultureInfo.InvariantCulture) });
        }
    }
}

/// <summary>Step 4: blue's final position, and green having applied it.</summary>
public sealed class CatchUpStep : ISwitchoverStep
{
    public bool NothingToUndo => true;

    public string Name => "catch-up";

    public string Description => "record blue's final position; wait until green has applied it";

    public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        var final = await context.Link.MarkFinalPositionAsync(cancellationToken);
        context.BlueFinalPosition = final.Value;
        context.BlueFinalDetails = final.Details;

        await context.Link.WaitForPositionAsync(final, cancellationToken);
        if (context.Deployment.CdcSlots.Count > 0 && context.Deployment.CdcWait)
        {
            // Inside the write pause and within the timeout: a consumer that does not confirm
            // blue's final position in time rolls the switchover back like any other timeout.
            await context.Link.WaitForCdcConsumersAsync(final, cancellationToken);
        }

        if (context.Deployment.CdcSlots.Count > 0 || context.ReverseStartPosition is not null)
        {
            // Journaled with the flip. Every change green applied from blue lies before it, every
            // client write on green after it: a CDC slot on green older than this is left from an
            // earlier cutover (one newer is this cutover's own), and replication back to blue
            // starts here. One round trip beside sync-sequences, the longer of the two.
            context.GreenCaughtUpPosition = (await context.Link.ReadPositionAsync(Side.Green, cancellationToken)).Value;
        }
    }
}

/// <summary>
/// Step 5: green's sequences continue where blue's stopped (logical replication does not carry
/// them). Runs alongside catch-up: blue's sequences are final once its transactions are drained,
/// and setting them on green does not touch what the apply worker writes.
/// </summary>
public sealed class SyncSequencesStep : ISwitchoverStep
{
    public bool NothingToUndo => true;

    public bool RunsWithPrevious => true;

    public string Name => "sync-sequences";

    public string Description => "set every sequence on green to blue's value and every role's password to blue's (alongside catch-up)";

    public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        var synced = await context.Link.SyncSequencesAsync(cancellationToken);
        context.SequencesSynced = synced.Count;

        // Passwords too: a role's password changed on blue after create must work on green.
        context.RolesNotLoggingIn = await context.Link.SyncLoginsAsync(cancellationToken);
    }

    public void RecordOutcome(SwitchoverContext context)
    {
        context.Record(
            Events.EventKinds.SequencesSynced,
            $"{context.SequencesSynced} sequence(s) on green set to blue's values",
            new Dictionary<string, string> { ["count"] = (context.SequencesSynced ?? 0).ToString(CultureInfo.InvariantCulture) });
        if (context.RolesNotLoggingIn is { Count: > 0 } roles)
        {
            context.Record(
                Events.EventKinds.SwitchoverPhase,
                $"{roles.Count} role(s) that log in to blue will not log in to green as they do to blue: {string.Join("; ", roles.Take(10))}",
                new Dictionary<string, string> { ["roles"] = string.Join(",", roles) });
        }
    }
}

/// <summary>
/// Step 7a: green accepts writes. It runs alongside the flip: both are journaled as started in
/// the flip's flushed commit, so green opens only once Teal can no longer go back, and blue is
/// fenced from <c>fence-blue</c> on — never two writable sides. Clients are still held, so the
/// endpoints moving while green opens lets no one write anywhere.
/// </summary>
public sealed class OpenGreenStep : ISwitchoverStep
{
    public string Name => "open-green";

    public bool RunsWithPrevious => true;

    public string Description => "open green for writes and record its position (alongside the flip, once it is journaled)";

    public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        // The slots first, alone on green: a logical slot's creation waits for every transaction
        // with an id running on the server to end, and for the next snapshot record after that.
        // Made beside the unfence's transactions (the holder's release, the file's write), it
        // took 200-370 ms in three of nine switchovers of the loop bench, against 4-10 ms alone.
        await MakeSlotsAsync(context, cancellationToken);

        // Then both at once, on two sessions: clients are still held, so nothing but Teal writes
        // on green until the endpoints resume, and the position read is the one it opens at.
        // Once green's logins are back, the endpoints log in there the sessions they move while
        // the rest of the unfence runs: at the resume only their state is left to replay. The
        // flip runs alongside; an endpoint waits for it to route to green before it logs
        // anything in.
        var reading = context.Link.ReadPositionAsync(Side.Green, cancellationToken);
        var opening = context.Link.OpenGreenAsync(ct => Task.WhenAll(context.Endpoints.Select(e => e.LoginsOpenAsync(ct))), cancellationToken);
        await Task.WhenAll(reading, opening);
        var position = await reading;
        context.GreenPosition = position.Value;
        context.GreenPositionDetails = position.Details;
    }

    /// <summary>The slots on green that must exist before any client can write there.</summary>
    private static async Task MakeSlotsAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        if (context.StartsReverseReplication && context.ReverseStartPosition is null)
        {
            // prepare-reverse-replication makes this slot before the pause; here only for a
            // switchover journaled by a Teal without that step. Made while green is still fenced
            // and has applied blue's final position, it keeps every write green takes once open.
            var start = await context.Link.PrepareReverseReplicationAsync(cancellationToken);
            context.ReverseStartPosition = start?.Value;
        }

        if (context.Deployment.CdcSlots.Count > 0)
        {
            // Same moment, same reason: consumers' slots on green start before any client write,
            // after every change blue's slots carried. Catch-up read green's position and the
            // flip's journal entry holds it; reading it here is for a journal written without it.
            var caughtUp = context.GreenCaughtUpPosition ?? (await context.Link.ReadPositionAsync(Side.Green, cancellationToken)).Value;
            context.CdcSlotsCreated = await context.Link.CreateCdcSlotsAsync(new ReplicationPosition(caughtUp), cancellationToken);
        }
    }

    public void RecordOutcome(SwitchoverContext context)
    {
        var data = new Dictionary<string, string> { ["greenPosition"] = context.GreenPosition ?? string.Empty, ["blueFinalPosition"] = context.BlueFinalPosition ?? string.Empty };
        if (context.ReverseReplicationStart is { } reverse)
        {
            data["reverseStartPosition"] = reverse;
        }

        // Engines with more coordinates (MariaDB: binlog file, position and GTID) name them too:
        // consumers of blue's binlog re-anchor on green with them.
        foreach (var (key, value) in context.GreenPositionDetails)
        {
            data["green." + key] = value;
        }

        var coordinates = context.GreenPositionDetails.TryGetValue("file", out var file) && context.GreenPositionDetails.TryGetValue("position", out var offset)
            ? $" (binary log coordinates in green after switchover: file {file} and position {offset})"
            : string.Empty;
        context.Record(
            Events.EventKinds.Positions,
            $"green opened for writes at {context.GreenPosition}{coordinates}; blue's final position was {context.BlueFinalPosition}",
            data);
        if (context.CdcSlotsCreated.Count > 0)
        {
            // What a consumer needs to move over: read blue's slot up to blue's final position,
            // then the slot of the same name on green from its start.
            var slots = new Dictionary<string, string> { ["blueFinalPosition"] = context.BlueFinalPosition ?? string.Empty, ["green"] = context.Names?.Blue ?? context.GreenName };
            foreach (var slot in context.CdcSlotsCreated)
            {
                slots["slot." + slot.Name] = slot.StartPosition;
                slots["plugin." + slot.Name] = slot.Plugin;
            }

            context.Record(
                Events.EventKinds.CdcSlotsCreated,
                $"CDC slot(s) on green before its first write: {string.Join(", ", context.CdcSlotsCreated.Select(s => $"{s.Name} ({s.Plugin}) from {s.StartPosition}{(s.Replaced ? ", replacing the stale one" : string.Empty)}{(s.Failover ? ", failover" : string.Empty)}"))}; consumers read blue's slot up to {context.BlueFinalPosition}, then green's",
                slots);
        }
    }
}

/// <summary>Step 7b: forward replication is dropped; after the endpoints resumed, so it costs clients nothing.</summary>
public sealed class StopReplicationStep : ISwitchoverStep
{
    public string Name => "stop-replication";

    public string Description => "drop the forward subscription, blue's slot and publication";

    public Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken) =>
        context.Link.StopReplicationAsync(cancellationToken);
}

/// <summary>
/// Step 1b: the publication and the slot that replication back to the side being left will read,
/// made on green before the pause: a logical slot's creation took 8-26 ms of the write pause
/// when open-green made it. Green still applies blue's writes then, so the slot starts before
/// blue's last ones; start-reverse-replication moves it to where green stood once caught up
/// (<see cref="SwitchoverContext.GreenCaughtUpPosition"/>), so blue never gets its own writes
/// back. A switchover that rolls back drops both: a slot left on green would hold its WAL.
/// </summary>
public sealed class PrepareReverseReplicationStep : ISwitchoverStep
{
    public string Name => "prepare-reverse-replication";

    public string Description => "create on green the publication and the slot replication back to blue will read (before the pause)";

    public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        if (!context.StartsReverseReplication)
        {
            // Opted out (teal create --no-reverse-replication).
            return;
        }

        var start = await context.Link.PrepareReverseReplicationAsync(cancellationToken);
        context.ReverseStartPosition = start?.Value;
    }

    public async Task UndoAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        if (!context.StartsReverseReplication)
        {
            return;
        }

        try
        {
            await context.Link.DropReverseReplicationAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // Undone last, when blue is writable again: a rollback caused by an unreachable green
            // must not wait for green to drop a slot. The next switchover uses it (moved on past
            // what it holds when blue subscribes).
            context.Record(
                Events.EventKinds.SwitchoverPhase,
                $"the slot for replication back to blue could not be dropped from green ({ex.Message}): it holds green's WAL until the next switchover uses it or `teal delete` drops it",
                new Dictionary<string, string> { ["slotLeftOnGreen"] = "true" });
        }
    }
}

/// <summary>
/// Step 7c: replication back from green to the side just left (which stays fenced for clients)
/// from green's position once it had applied blue's final one, so a switchback loses nothing and
/// gets nothing twice. Runs after forward replication is dropped: both directions at once would
/// send each write back where it came from.
/// </summary>
public sealed class StartReverseReplicationStep : ISwitchoverStep
{
    public string Name => "start-reverse-replication";

    public string Description => "subscribe the old blue (still fenced) to green from green's position before it opened: every write on green reaches it";

    public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        if (context.ReverseReplicationStart is not { } start)
        {
            // Opted out (teal create --no-reverse-replication), or an engine without it.
            return;
        }

        await context.Link.StartReverseReplicationAsync(new ReplicationPosition(start), cancellationToken);
    }

    public void RecordOutcome(SwitchoverContext context)
    {
        if (context.ReverseReplicationStart is { } start)
        {
            var what = context.IsSwitchback ? "forward replication re-established" : "reverse replication started";
            context.Record(
                Events.EventKinds.ReverseReplicationStarted,
                $"{what}: '{context.Names?.BlueNewName ?? context.BlueName}' applies every write on '{context.Names?.Blue ?? context.GreenName}' from {start}",
                new Dictionary<string, string> { ["startPosition"] = start, ["switchback"] = context.IsSwitchback ? "true" : "false" });
        }
    }
}
