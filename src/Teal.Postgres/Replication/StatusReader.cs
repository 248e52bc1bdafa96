using Teal.Core.Deployments;
using Teal.Core.Engines;

namespace Teal.Postgres.Replication;

/// <summary>
/// Reads the replication state. Lag in bytes comes from blue's slot; lag in seconds from the
/// heartbeat: Teal remembers when it wrote each heartbeat, so when green shows heartbeat k while
/// k+1 was written at t, green misses everything since t and lags now − t (0 when it shows the
/// newest). This is tighter than "now − ts of the row on green", which always reads up to one
/// heartbeat interval even with no lag, and it needs no clock agreement between servers.
/// </summary>
internal sealed class StatusReader(LinkSessions sessions, ReplicationSetup setup, TimeProvider time)
{
    private const int HistoryLength = 4096;
    private readonly Lock _gate = new();
    private readonly LinkedList<(DateTimeOffset Ts, DateTimeOffset WrittenAt)> _written = new();

    /// <summary>Writes the heartbeat row on blue and remembers the value written.</summary>
    public async Task WriteHeartbeatAsync(CancellationToken cancellationToken)
    {
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        var ts = await blue.ScalarAsync<DateTime>(
            "INSERT INTO teal.heartbeat AS h (name, ts) VALUES ($1, clock_timestamp()) ON CONFLICT (name) DO UPDATE SET ts = excluded.ts RETURNING ts",
            cancellationToken,
            sessions.Spec.Name);
        lock (_gate)
        {
            _written.AddLast((new DateTimeOffset(DateTime.SpecifyKind(ts, DateTimeKind.Utc)), time.GetUtcNow()));
            while (_written.Count > HistoryLength)
            {
                _written.RemoveFirst();
            }
        }
    }

    public async Task<ReplicationSnapshot> ReadAsync(CancellationToken cancellationToken)
    {
        await setup.AdoptControlRoleAsync(cancellationToken);
        var blueTask = ReadBlueAsync(cancellationToken);
        var greenTask = ReadGreenAsync(cancellationToken);
        var skippedTask = setup.SkippedTablesAsync(repairPublication: false, cancellationToken);
        await Task.WhenAll(blueTask, greenTask, skippedTask);
        var blue = await blueTask;
        var green = await greenTask;
        var skipped = (await skippedTask).Select(t => Sql.Display(t.Schema, t.Table)).ToList();

        var (state, reason) = Classify(blue, green, skipped);
        return new ReplicationSnapshot(state)
        {
            Reason = reason,
            LagBytes = blue.LagBytes,
            RetainedBytes = blue.RetainedBytes,
            LagSeconds = LagSeconds(green.HeartbeatTs),
            WorkerRunning = green.WorkerRunning,
            Tables = green.Tables,
            PendingDdl = blue.PendingDdl,
            SkippedTables = skipped,
        };
    }

    private static (ReplicationState, string?) Classify(BlueState blue, GreenState green, List<string> skipped)
    {
        if (!green.SubscriptionExists)
        {
            return (ReplicationState.Stopped, $"the subscription does not exist on green");
        }

        if (!green.Enabled)
        {
            return (ReplicationState.Stopped, "the subscription on green is disabled");
        }

        if (!blue.SlotExists)
        {
            return (ReplicationState.Stopped, "blue's replication slot is gone");
        }

        if (skipped.Count > 0)
        {
            return (ReplicationState.Degraded, $"{skipped.Count} table(s) on blue are not replicated to green: {string.Join(", ", skipped)} (run add-missing-tables)");
        }

        if (blue.PendingDdl.Count > 0)
        {
            var first = blue.PendingDdl[0];
            return (ReplicationState.Degraded, $"DDL on blue not acknowledged ({blue.PendingDdl.Count}): #{first.Id} {first.CommandTag}: {Shorten(first.Statement)}");
        }

        // Right after CREATE SUBSCRIPTION the launcher takes a moment to start the apply worker:
        // during the initial copy a missing worker is only a stop when errors were counted.
        if (green.Tables.Any(t => t.State != TableCopyState.Ready) && (green.WorkerRunning || green.LastError is null))
        {
            var copying = green.Tables.Count(t => t.State != TableCopyState.Ready);
            return (ReplicationState.Syncing, $"{copying} of {green.Tables.Count} tables still copying");
        }

        if (!green.WorkerRunning)
        {
            return (ReplicationState.Stopped, "the apply worker on green is not running" + (green.LastError is null ? string.Empty : $" ({green.LastError})") + "; see green's server log");
        }

        return (ReplicationState.Replicating, null);
    }

    private static string Shorten(string statement)
    {
        var flat = string.Join(' ', statement.Split((char[])['\n', '\r', '\t', ' '], StringSplitOptions.RemoveEmptyEntries));
        return flat.Length <= 200 ? flat : flat[..200] + "…";
    }

    private double? LagSeconds(DateTimeOffset? applied)
    {
        if (applied is null)
        {
            return null;
        }

        var now = time.GetUtcNow();
        lock (_gate)
        {
            // The oldest heartbeat written after the one green shows: green misses everything since.
            foreach (var (ts, writtenAt) in _written)
            {
                if (ts > applied.Value)
                {
                    return Math.Max(0, (now - writtenAt).TotalSeconds);
                }
            }

            if (_written.Count > 0)
            {
                return 0;
            }
        }

        // Nothing written by this link yet (Teal restarted): fall back to the row's age.
        return Math.Max(0, (now - applied.Value).TotalSeconds);
    }

    private sealed record BlueState(bool SlotExists, long? LagBytes, long? RetainedBytes, IReadOnlyList<PendingDdl> PendingDdl);

    private sealed record GreenState(bool SubscriptionExists, bool Enabled, bool WorkerRunning, string? LastError, DateTimeOffset? HeartbeatTs, IReadOnlyList<TableProgress> Tables);

    private async Task<BlueState> ReadBlueAsync(CancellationToken cancellationToken)
    {
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        var slot = await blue.QueryAsync(
            """
            SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
            FROM pg_replication_slots WHERE slot_name = $1
            """,
            r => (Lag: r.NullableInt64(0), Retained: r.NullableInt64(1)),
            cancellationToken,
            sessions.Spec.Name);
        var ddl = await TealObjects.SchemaExistsAsync(blue, cancellationToken)
            ? await blue.QueryAsync(
                "SELECT id, at, command_tag, statement FROM teal.ddl_log WHERE deployment = $1 AND NOT acknowledged ORDER BY id",
                r => new PendingDdl(r.GetInt64(0), new DateTimeOffset(DateTime.SpecifyKind(r.GetDateTime(1), DateTimeKind.Utc)), r.GetString(2), r.GetString(3)),
                cancellationToken,
                sessions.Spec.Name)
            : [];
        return new BlueState(slot.Count > 0, slot.FirstOrDefault().Lag, slot.FirstOrDefault().Retained, ddl);
    }

    private async Task<GreenState> ReadGreenAsync(CancellationToken cancellationToken)
    {
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var sub = await green.QueryAsync(
            """
            SELECT s.subenabled,
                   EXISTS (SELECT 1 FROM pg_stat_subscription w WHERE w.subid = s.oid AND w.relid IS NULL AND w.pid IS NOT NULL),
                   (SELECT 'apply errors: ' || st.apply_error_count || ', table sync errors: ' || st.sync_error_count
                      FROM pg_stat_subscription_stats st WHERE st.subid = s.oid AND st.apply_error_count + st.sync_error_count > 0)
            FROM pg_subscription s WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            """,
            r => (Enabled: r.GetBoolean(0), Running: r.GetBoolean(1), Error: r.NullableString(2)),
            cancellationToken,
            sessions.Spec.Name);
        if (sub.Count == 0)
        {
            return new GreenState(false, false, false, null, null, []);
        }

        // Rows of a table being copied are not visible yet; its size on disk grows with the COPY.
        var tables = await green.QueryAsync(
            """
            SELECT n.nspname::text, c.relname::text, sr.srsubstate::text,
                   CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END, pg_table_size(c.oid)
            FROM pg_subscription_rel sr JOIN pg_subscription s ON s.oid = sr.srsubid
            JOIN pg_class c ON c.oid = sr.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE s.subname = $1 ORDER BY 1, 2
            """,
            r => new TableProgress(Sql.Display(r.GetString(0), r.GetString(1)), CopyState(r.GetString(2))) { Rows = r.NullableInt64(3), Bytes = r.NullableInt64(4) },
            cancellationToken,
            sessions.Spec.Name);
        var heartbeat = await TealObjects.SchemaExistsAsync(green, cancellationToken)
            ? await green.ScalarAsync<DateTime?>("SELECT ts FROM teal.heartbeat WHERE name = $1", cancellationToken, sessions.Spec.Name)
            : null;
        return new GreenState(
            true,
            sub[0].Enabled,
            sub[0].Running,
            sub[0].Error,
            heartbeat is { } ts ? new DateTimeOffset(DateTime.SpecifyKind(ts, DateTimeKind.Utc)) : null,
            tables);
    }

    /// <summary>pg_subscription_rel.srsubstate: i init, d data copy, f finished copy, s synchronized, r ready.</summary>
    private static TableCopyState CopyState(string state) => state switch
    {
        "i" => TableCopyState.Pending,
        "d" => TableCopyState.Copying,
        "f" or "s" => TableCopyState.Copied,
        _ => TableCopyState.Ready,
    };
}
