using System.Globalization;
using Teal.Core.Engines;
using Teal.Core.Errors;

namespace Teal.Postgres.Replication;

/// <summary>
/// Replication positions. A position is blue's LSN plus the value of the deployment's
/// heartbeat marker written at it: green has applied the position once it shows that marker,
/// which needs no LSN arithmetic across servers (commits are applied in blue's commit order).
/// </summary>
internal sealed class Positions(LinkSessions sessions, TimeProvider time)
{
    public const string MarkerKey = "marker";

    /// <summary>Bumps the marker on blue as Teal (it passes the fence) and returns blue's position after it.</summary>
    public async Task<ReplicationPosition> MarkAsync(CancellationToken cancellationToken)
    {
        await using var conn = await sessions.OpenAsync(Side.Blue, cancellationToken);
        var marker = await conn.ScalarAsync<long>(
            """
            INSERT INTO teal.heartbeat AS h (name, ts, marker) VALUES ($1, clock_timestamp(), 1)
            ON CONFLICT (name) DO UPDATE SET ts = excluded.ts, marker = h.marker + 1
            RETURNING marker
            """,
            cancellationToken,
            sessions.Spec.Name);
        // The insert position, not the written-out one: a commit is visible before it is written
        // (the apply worker commits asynchronously), and what is read here must lie past it.
        var lsn = await conn.ScalarAsync<string>("SELECT pg_current_wal_insert_lsn()::text", cancellationToken);
        return new ReplicationPosition(lsn!) { Details = new Dictionary<string, string> { [MarkerKey] = marker.ToString(CultureInfo.InvariantCulture) } };
    }

    /// <summary>
    /// Polls green every 2 ms until the marker arrived; a position without a marker (read by
    /// <see cref="ReadAsync"/>) is reached when blue's slot confirms it. The poll is not prepared:
    /// in the catch-up it runs a few times, and preparing it cost a round trip more inside the
    /// write pause, and in a serve's first switchover Npgsql's prepare path compiled there too.
    /// </summary>
    public async Task WaitAsync(ReplicationPosition position, CancellationToken cancellationToken)
    {
        var poll = TimeSpan.FromMilliseconds(2);
        if (position.Details.TryGetValue(MarkerKey, out var text))
        {
            var marker = long.Parse(text, CultureInfo.InvariantCulture);
            await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
            await using var command = green.Command("SELECT marker FROM teal.heartbeat WHERE name = $1", sessions.Spec.Name);
            while ((await command.ExecuteScalarAsync(cancellationToken) is long seen ? seen : -1) < marker)
            {
                await Task.Delay(poll, time, cancellationToken);
            }

            return;
        }

        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        while (true)
        {
            var reached = await blue.ScalarAsync<bool?>(
                "SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
                cancellationToken,
                sessions.Spec.Name,
                position.Value);
            if (reached is null)
            {
                throw new TealException("replication.slot-missing", $"blue has no replication slot {sessions.Spec.Name}", "replication was removed: recreate the deployment");
            }

            if (reached.Value)
            {
                return;
            }

            await Task.Delay(poll, time, cancellationToken);
        }
    }

    public async Task<ReplicationPosition> ReadAsync(Side side, CancellationToken cancellationToken)
    {
        await using var conn = await sessions.OpenAsync(side, cancellationToken);
        // The insert position, not the written-out one: a commit is visible before it is written
        // (the apply worker commits asynchronously), and what is read here must lie past it.
        var lsn = await conn.ScalarAsync<string>("SELECT pg_current_wal_insert_lsn()::text", cancellationToken);
        return new ReplicationPosition(lsn!);
    }

    /// <summary>
    /// Sets every sequence on green to blue's state (last value and whether it was called), in
    /// one round trip per side. Sequences missing on green are reported with no value after.
    /// </summary>
    public async Task<IReadOnlyList<SequenceSync>> SyncSequencesAsync(CancellationToken cancellationToken)
    {
        var blueTask = ReadSequencesAsync(Side.Blue, cancellationToken);
        var greenTask = ReadSequencesAsync(Side.Green, cancellationToken);
        await Task.WhenAll(blueTask, greenTask);
        var blue = await blueTask;
        var green = (await greenTask).ToDictionary(s => s.Name);

        var result = new List<SequenceSync>();
        var statements = new List<string>();
        foreach (var b in blue)
        {
            if (!green.TryGetValue(b.Name, out var g))
            {
                result.Add(new SequenceSync(b.Name, b.LastValue, null, null));
                continue;
            }

            var value = b.LastValue ?? b.Start;
            statements.Add($"SELECT setval({Sql.Literal(Sql.Qualified(b.Schema, b.Sequence))}, {value.ToString(CultureInfo.InvariantCulture)}, {(b.LastValue is null ? "false" : "true")})");
            result.Add(new SequenceSync(b.Name, b.LastValue, g.LastValue, b.LastValue));
        }

        if (statements.Count > 0)
        {
            await using var conn = await sessions.OpenAsync(Side.Green, cancellationToken);
            await using var batch = conn.CreateBatch();
            foreach (var s in statements)
            {
                batch.BatchCommands.Add(new Npgsql.NpgsqlBatchCommand(s));
            }

            await batch.ExecuteNonQueryAsync(cancellationToken);
        }

        return result;
    }

    public sealed record SequenceState(string Schema, string Sequence, long? LastValue, long Start)
    {
        public string Name => Sql.Display(Schema, Sequence);
    }

    /// <summary>pg_sequences shows last_value NULL for a sequence never called.</summary>
    public async Task<List<SequenceState>> ReadSequencesAsync(Side side, CancellationToken cancellationToken)
    {
        await using var conn = await sessions.OpenAsync(side, cancellationToken);
        return await conn.QueryAsync(
            "SELECT schemaname::text, sequencename::text, last_value, start_value FROM pg_sequences WHERE schemaname <> 'teal' ORDER BY 1, 2",
            r => new SequenceState(r.GetString(0), r.GetString(1), r.NullableInt64(2), r.GetInt64(3)),
            cancellationToken);
    }
}
