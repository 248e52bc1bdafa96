using System.Globalization;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.MySql.Connections;

namespace Teal.MySql.Replication;

/// <summary>
/// Binlog positions and GTIDs: blue's final position once fenced, waiting on green for it
/// (<c>MASTER_GTID_WAIT</c>), either side's current coordinates (file, position, GTID — what
/// consumers re-anchor on after a switchover), and the AUTO_INCREMENT check.
/// </summary>
internal sealed class Positions(LinkSessions sessions)
{
    /// <summary>
    /// Blue's final position. No marker is needed: blue is fenced and drained, every account that
    /// could still write is locked out, so its GTID position does not move any more.
    /// </summary>
    public Task<ReplicationPosition> MarkAsync(CancellationToken cancellationToken) => ReadAsync(Side.Blue, cancellationToken);

    /// <summary>
    /// Current coordinates: binlog file and position, and the GTID position — blue's binlog
    /// position; for green the current position (what it replicated and what it wrote).
    /// </summary>
    public async Task<ReplicationPosition> ReadAsync(Side side, CancellationToken cancellationToken)
    {
        await using var connection = await sessions.OpenAsync(side, cancellationToken);
        var gtid = await Sql.StringAsync(connection, side == Side.Blue ? "SELECT @@global.gtid_binlog_pos" : "SELECT @@global.gtid_current_pos", cancellationToken) ?? string.Empty;
        var master = await Sql.RowAsync(connection, "SHOW MASTER STATUS", cancellationToken);
        var details = new Dictionary<string, string> { ["gtid"] = gtid };
        if (master is not null)
        {
            details["file"] = master["File"]!;
            details["position"] = master["Position"]!;
        }

        return new ReplicationPosition(gtid) { Details = details };
    }

    /// <summary>How long the switchover's preparation may wait for green to come close to blue (clients still write meanwhile).</summary>
    public static readonly TimeSpan CatchUpBeforePauseBudget = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Before the write pause: waits (up to <see cref="CatchUpBeforePauseBudget"/>) until green
    /// has executed what blue had written, again and again while each round finds more to wait
    /// for, so that the catch-up inside the pause only has the last moments to apply. Under a
    /// steady load the replica trails blue by whatever it has not applied yet; without this wait
    /// that backlog (seconds, on a busy machine) was all applied while clients were held.
    /// Changes nothing; a replica that cannot get close within the budget is left to the
    /// catch-up step and its timeout.
    /// </summary>
    public async Task CatchUpBeforePauseAsync(CancellationToken cancellationToken)
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        for (var round = 0; round < 5; round++)
        {
            var remaining = CatchUpBeforePauseBudget - System.Diagnostics.Stopwatch.GetElapsedTime(started);
            if (remaining <= TimeSpan.Zero)
            {
                return;
            }

            var position = await Sql.StringAsync(blue, "SELECT @@global.gtid_binlog_pos", cancellationToken) ?? string.Empty;
            var waited = System.Diagnostics.Stopwatch.GetTimestamp();
            var result = await Sql.LongAsync(green, "SELECT MASTER_GTID_WAIT(@p, @t)", cancellationToken, ("@p", position), ("@t", remaining.TotalSeconds));
            // Close enough when green was already there or got there at once: what blue wrote
            // meanwhile is what the catch-up in the pause applies.
            if (result != 0 || System.Diagnostics.Stopwatch.GetElapsedTime(waited) < TimeSpan.FromMilliseconds(50))
            {
                return;
            }
        }
    }

    /// <summary>Waits until green has executed <paramref name="position"/>; a broken replica fails at once, with its error.</summary>
    public async Task WaitAsync(ReplicationPosition position, CancellationToken cancellationToken)
    {
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        while (true)
        {
            // Short waits, so cancellation (the switchover's timeout) and a broken replica are seen promptly.
            var result = await Sql.LongAsync(green, "SELECT MASTER_GTID_WAIT(@p, 0.5)", cancellationToken, ("@p", position.Value));
            if (result == 0)
            {
                return;
            }

            var replica = await ReplicaStatus.ReadAsync(green, cancellationToken);
            if (replica is null || replica.Error is not null || !replica.SqlRunning)
            {
                throw new TealException(
                    "switchover.replication-broken",
                    $"green cannot reach blue's final position {position.Value}: " + (replica?.Error ?? "its replication is not running"),
                    "fix green's replication (SHOW SLAVE STATUS on green), then switch over again");
            }
        }
    }

    /// <summary>
    /// Every AUTO_INCREMENT counter on green must be above blue's largest value, or green's first
    /// inserts would collide with rows blue gave out. Row events that insert explicit ids move
    /// green's counters as they apply, so this normally finds nothing; a counter that is not
    /// above is raised on green (unlogged: it is green's setting, not a change to replicate).
    /// </summary>
    public async Task<IReadOnlyList<SequenceSync>> CheckAutoIncrementAsync(CancellationToken cancellationToken)
    {
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        await using var green = await sessions.OpenUnloggedAsync(Side.Green, cancellationToken);
        var schemas = await TealObjects.UserSchemasAsync(blue, sessions.Schema, cancellationToken);
        if (schemas.Count == 0)
        {
            return [];
        }

        var list = string.Join(",", schemas.Select(Sql.Literal));
        var columns = await Sql.RowsAsync(
            blue,
            $"SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME FROM information_schema.COLUMNS c JOIN information_schema.TABLES t USING (TABLE_SCHEMA, TABLE_NAME) WHERE t.TABLE_TYPE = 'BASE TABLE' AND c.EXTRA LIKE '%auto_increment%' AND c.TABLE_SCHEMA IN ({list}) ORDER BY 1, 2",
            cancellationToken);
        var results = new List<SequenceSync>();
        foreach (var c in columns)
        {
            var (schema, table, column) = (c["TABLE_SCHEMA"]!, c["TABLE_NAME"]!, c["COLUMN_NAME"]!);
            var blueMax = await Sql.ScalarAsync(blue, $"SELECT MAX({Sql.Id(column)}) FROM {Sql.Table(schema, table)}", cancellationToken);
            long? max = blueMax is null ? null : Convert.ToInt64(blueMax, CultureInfo.InvariantCulture);
            var before = await Sql.ScalarAsync(green, "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = @s AND TABLE_NAME = @t", cancellationToken, ("@s", schema), ("@t", table));
            long? greenBefore = before is null ? null : Convert.ToInt64(before, CultureInfo.InvariantCulture);
            var greenAfter = greenBefore;
            if (max is { } m && (greenBefore is null || greenBefore.Value <= m))
            {
                await Sql.ExecuteAsync(green, $"ALTER TABLE {Sql.Table(schema, table)} AUTO_INCREMENT = {(m + 1).ToString(CultureInfo.InvariantCulture)}", cancellationToken);
                greenAfter = m + 1;
            }

            results.Add(new SequenceSync($"{schema}.{table}.{column}", max, greenBefore, greenAfter));
        }

        return results;
    }
}
