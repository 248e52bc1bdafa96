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
    /// <remarks>
    /// Inside the write pause, beside catch-up, so its round trips are clients' wait: blue's
    /// columns in one and all their largest values in a second (one <c>UNION ALL</c>), green's
    /// counters in one at the same time, however many tables there are (a round trip per table
    /// and side took 14–20 ms with the bench's two tables). Every <c>information_schema</c>
    /// lookup names the user schemas and reads one view of it: without the list, or joined with
    /// another view, MariaDB opens far more tables (52 ms for the whole server).
    /// </remarks>
    public async Task<IReadOnlyList<SequenceSync>> CheckAutoIncrementAsync(CancellationToken cancellationToken)
    {
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        var schemas = await TealObjects.UserSchemasAsync(blue, sessions.Schema, cancellationToken);
        if (schemas.Count == 0)
        {
            return [];
        }

        var list = string.Join(",", schemas.Select(Sql.Literal));
        var greenCounters = GreenCountersAsync(list, cancellationToken);
        var blueMaxima = BlueMaximaAsync(blue, list, cancellationToken);
        await Task.WhenAll(greenCounters, blueMaxima);
        var counters = await greenCounters;
        var results = new List<SequenceSync>();
        var raises = new List<string>();
        foreach (var (schema, table, column, max) in await blueMaxima)
        {
            long? greenBefore = counters.TryGetValue((schema, table), out var counter) ? counter : null;
            var greenAfter = greenBefore;
            if (max is { } m && (greenBefore is null || greenBefore.Value <= m))
            {
                raises.Add($"ALTER TABLE {Sql.Table(schema, table)} AUTO_INCREMENT = {(m + 1).ToString(CultureInfo.InvariantCulture)}");
                greenAfter = m + 1;
            }

            results.Add(new SequenceSync($"{schema}.{table}.{column}", max, greenBefore, greenAfter));
        }

        if (raises.Count > 0)
        {
            await using var green = await sessions.OpenUnloggedAsync(Side.Green, cancellationToken);
            foreach (var raise in raises)
            {
                await Sql.ExecuteAsync(green, raise, cancellationToken);
            }
        }

        return results;
    }

    /// <summary>Blue's AUTO_INCREMENT columns in the schemas listed, each with its largest value (null in an empty table).</summary>
    private static async Task<List<(string Schema, string Table, string Column, long? Max)>> BlueMaximaAsync(MySqlConnector.MySqlConnection blue, string schemaList, CancellationToken cancellationToken)
    {
        var columns = (await Sql.RowsAsync(
                blue,
                // COLUMNS alone: a view's columns never say auto_increment, and a join with
                // TABLES took 6.6 ms where this takes 0.8 (MariaDB 10.11, the bench's tables).
                $"SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS WHERE EXTRA LIKE '%auto_increment%' AND TABLE_SCHEMA IN ({schemaList}) ORDER BY 1, 2",
                cancellationToken))
            .Select(c => (Schema: c["TABLE_SCHEMA"]!, Table: c["TABLE_NAME"]!, Column: c["COLUMN_NAME"]!))
            .ToList();
        if (columns.Count == 0)
        {
            return [];
        }

        // MAX of an AUTO_INCREMENT column (always indexed) reads one end of its index.
        var maxima = string.Join(
            " UNION ALL ",
            columns.Select((c, i) => $"SELECT {i.ToString(CultureInfo.InvariantCulture)} AS i, MAX({Sql.Id(c.Column)}) AS m FROM {Sql.Table(c.Schema, c.Table)}"));
        var values = (await Sql.RowsAsync(blue, maxima, cancellationToken))
            .ToDictionary(r => int.Parse(r["i"]!, CultureInfo.InvariantCulture), r => r["m"] is { } m ? long.Parse(m, CultureInfo.InvariantCulture) : (long?)null);
        return columns.Select((c, i) => (c.Schema, c.Table, c.Column, values.GetValueOrDefault(i))).ToList();
    }

    /// <summary>Green's AUTO_INCREMENT counter of every table in the schemas listed that has one (a table missing there is missing here).</summary>
    private async Task<Dictionary<(string Schema, string Table), long?>> GreenCountersAsync(string schemaList, CancellationToken cancellationToken)
    {
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var rows = await Sql.RowsAsync(
            green,
            $"SELECT TABLE_SCHEMA, TABLE_NAME, AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA IN ({schemaList}) AND AUTO_INCREMENT IS NOT NULL",
            cancellationToken);
        return rows.ToDictionary(
            r => (r["TABLE_SCHEMA"]!, r["TABLE_NAME"]!),
            r => r["AUTO_INCREMENT"] is { } value ? long.Parse(value, CultureInfo.InvariantCulture) : (long?)null);
    }
}
