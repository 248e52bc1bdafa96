using Npgsql;
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
internal sealed class StatusReader(LinkSessions sessions, ReplicationSetup setup, SchemaDrift drift, DdlLog ddl, TimeProvider time)
{
    private const int HistoryLength = 4096;

    /// <summary>
    /// A failing apply worker is restarted every wal_retrieve_retry_interval (5 s by default)
    /// and fails again at once: errors counted within this window mean it is failing now.
    /// </summary>
    private static readonly TimeSpan StallWindow = TimeSpan.FromSeconds(20);

    /// <summary>Once fixed, green catches up within seconds; a lag this small says the worker applies again.</summary>
    private const double CaughtUpSeconds = 3;

    /// <summary>
    /// The launcher restarts an apply worker that exited (after an error, an ALTER SUBSCRIPTION,
    /// a refresh) within seconds: only a worker missing longer than this is reported STOPPED.
    /// </summary>
    private static readonly TimeSpan RestartGrace = TimeSpan.FromSeconds(20);

    private long? _errorCount;
    private DateTimeOffset? _errorsRoseAt;
    private DateTimeOffset? _workerMissingSince;
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
        // Teal's parallel copy runs before the subscription exists: its own progress is the status.
        if (setup.CopyFailure is { } failure)
        {
            return new ReplicationSnapshot(ReplicationState.Stopped) { Reason = $"the parallel copy failed: {failure}", Tables = setup.CopyProgress };
        }

        if (setup.Copying)
        {
            return new ReplicationSnapshot(ReplicationState.Syncing) { Reason = "copying in parallel", WorkerRunning = true, Tables = setup.CopyProgress.Count > 0 ? setup.CopyProgress : [new TableProgress("(snapshot)", TableCopyState.Pending)] };
        }

        await setup.AdoptControlRoleAsync(cancellationToken);
        var blueTask = ReadBlueAsync(cancellationToken);
        var greenTask = ReadGreenAsync(cancellationToken);
        var skippedTask = setup.SkippedTablesAsync(repairPublication: false, cancellationToken);
        await Task.WhenAll(blueTask, greenTask, skippedTask);
        var blue = await blueTask;
        var green = await greenTask;
        var skipped = (await skippedTask).Select(t => Sql.Display(t.Schema, t.Table)).ToList();
        var lagSeconds = LagSeconds(green.HeartbeatTs);
        var (stalled, restarting) = Observe(green, lagSeconds);

        // What green lacks is read only when something is wrong: two catalog reads per side.
        List<string> differences = [];
        string? applyError = null;
        if (stalled || blue.PendingDdl.Count > 0 || skipped.Count > 0)
        {
            differences = (await drift.ReadAsync(cancellationToken)).Describe();
        }

        if (stalled)
        {
            applyError = await ReadApplyErrorAsync(cancellationToken);
        }

        var (state, reason) = Classify(blue, green, skipped, stalled, restarting, applyError, differences);
        return new ReplicationSnapshot(state)
        {
            Reason = reason,
            LagBytes = blue.LagBytes,
            RetainedBytes = blue.RetainedBytes,
            LagSeconds = lagSeconds,
            WorkerRunning = green.WorkerRunning,
            Tables = green.Tables,
            PendingDdl = blue.PendingDdl,
            SkippedTables = skipped,
            Stalled = stalled,
            ApplyError = applyError,
            SchemaDifferences = differences,
        };
    }

    /// <summary>
    /// Teal just gave green what it lacked (apply-ddl, add-tables): errors counted before are
    /// history. If the worker still fails, its count rises again and the stall is reported again.
    /// </summary>
    public void ForgetStall()
    {
        lock (_gate)
        {
            _errorsRoseAt = null;
        }
    }

    /// <summary>
    /// Follows the apply worker between reads: whether its error count rose lately (it is
    /// failing now, not once long ago) while green falls behind, and whether a missing worker is
    /// only being restarted.
    /// </summary>
    private (bool Stalled, bool Restarting) Observe(GreenState green, double? lagSeconds)
    {
        var now = time.GetUtcNow();
        lock (_gate)
        {
            if (green.ErrorCount is { } count)
            {
                if (_errorCount is { } before ? count > before : count > 0 && !green.WorkerRunning)
                {
                    _errorsRoseAt = now;
                }

                _errorCount = count;
            }

            _workerMissingSince = green.WorkerRunning || !green.Enabled ? null : _workerMissingSince ?? now;
            var failing = _errorsRoseAt is { } rose && now - rose < StallWindow;
            var stalled = failing && (lagSeconds is null || lagSeconds >= CaughtUpSeconds);
            var restarting = _workerMissingSince is { } since && now - since < RestartGrace;
            return (stalled, restarting);
        }
    }

    private static (ReplicationState, string?) Classify(BlueState blue, GreenState green, List<string> skipped, bool stalled, bool restarting, string? applyError, List<string> differences)
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

        var lacks = differences.Count == 0 ? string.Empty : $"; green lacks: {string.Join(", ", differences.Take(5))}{(differences.Count > 5 ? ", …" : string.Empty)}";
        if (stalled)
        {
            var error = applyError is null ? "green's apply worker keeps failing (green's server log has its error)" : $"green's apply worker keeps failing: {applyError}";
            return (ReplicationState.Degraded, $"replication is stalled: {error}; nothing reaches green, for any table, and the lag grows{lacks}");
        }

        if (skipped.Count > 0)
        {
            return (ReplicationState.Degraded, $"{skipped.Count} table(s) on blue are not replicated to green: {string.Join(", ", skipped)}");
        }

        if (blue.PendingDdl.Count > 0)
        {
            var first = blue.PendingDdl[0];
            return (ReplicationState.Degraded, $"DDL on blue not yet applied on green ({blue.PendingDdl.Count}): #{first.Id} {first.CommandTag}: {Shorten(first.Statement)}{lacks}");
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
            return restarting
                ? (ReplicationState.Replicating, "green's apply worker is restarting")
                : (ReplicationState.Stopped, "the apply worker on green is not running" + (green.LastError is null ? string.Empty : $" ({green.LastError})") + "; see green's server log");
        }

        return (ReplicationState.Replicating, null);
    }

    /// <summary>
    /// The apply worker's last error, from green's server log read through SQL (superuser's
    /// pg_read_file): the logging collector's current file, or else the <c>server.log</c> beside
    /// the data directory of a server Teal manages. Null when neither can be read: the error
    /// count and the catalog comparison still say what is wrong.
    /// </summary>
    private async Task<string?> ReadApplyErrorAsync(CancellationToken cancellationToken)
    {
        try
        {
            await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
            var tail = await green.ScalarAsync<string>(
                """
                WITH f AS (
                    SELECT coalesce(CASE WHEN l LIKE '/%' THEN l ELSE current_setting('data_directory') || '/' || l END,
                                    current_setting('data_directory') || '/../server.log') AS path
                    FROM (SELECT pg_current_logfile() AS l) c),
                s AS (SELECT path, (pg_stat_file(path, true)).size AS size FROM f)
                SELECT pg_read_file(path, greatest(size - 65536, 0), least(size, 65536), true) FROM s WHERE size IS NOT NULL
                """,
                cancellationToken);
            return tail is null ? null : LastApplyError(tail);
        }
        catch (PostgresException)
        {
            // Not a superuser, or the file is elsewhere: no quote.
            return null;
        }
    }

    /// <summary>The last ERROR that a logical replication worker logged, without its line prefix.</summary>
    public static string? LastApplyError(string log)
    {
        var lines = log.Split('\n');
        for (var i = lines.Length - 1; i >= 0; i--)
        {
            var at = lines[i].IndexOf("ERROR:", StringComparison.Ordinal);
            if (at < 0)
            {
                continue;
            }

            var message = lines[i][(at + "ERROR:".Length)..].Trim();
            // DETAIL and HINT may come between the error and the CONTEXT naming the replication origin.
            var context = lines.Skip(i + 1).Take(3).TakeWhile(l => l.Contains("DETAIL:", StringComparison.Ordinal) || l.Contains("HINT:", StringComparison.Ordinal) || l.Contains("CONTEXT:", StringComparison.Ordinal));
            if (message.Contains("logical replication", StringComparison.Ordinal) || context.Any(l => l.Contains("replication origin", StringComparison.Ordinal)))
            {
                return message;
            }
        }

        return null;
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

    private sealed record GreenState(bool SubscriptionExists, bool Enabled, bool WorkerRunning, string? LastError, long? ErrorCount, DateTimeOffset? HeartbeatTs, IReadOnlyList<TableProgress> Tables);

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
        var pending = (await ddl.ReadPendingAsync(blue, cancellationToken)).Select(DdlLog.ToPending).ToList();
        return new BlueState(slot.Count > 0, slot.FirstOrDefault().Lag, slot.FirstOrDefault().Retained, pending);
    }

    private async Task<GreenState> ReadGreenAsync(CancellationToken cancellationToken)
    {
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var sub = await green.QueryAsync(
            """
            SELECT s.subenabled,
                   EXISTS (SELECT 1 FROM pg_stat_subscription w WHERE w.subid = s.oid AND w.relid IS NULL AND w.pid IS NOT NULL),
                   (SELECT 'apply errors: ' || st.apply_error_count || ', table sync errors: ' || st.sync_error_count
                      FROM pg_stat_subscription_stats st WHERE st.subid = s.oid AND st.apply_error_count + st.sync_error_count > 0),
                   (SELECT st.apply_error_count + st.sync_error_count FROM pg_stat_subscription_stats st WHERE st.subid = s.oid)
            FROM pg_subscription s WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            """,
            r => (Enabled: r.GetBoolean(0), Running: r.GetBoolean(1), Error: r.NullableString(2), Errors: r.NullableInt64(3)),
            cancellationToken,
            sessions.Spec.Name);
        if (sub.Count == 0)
        {
            return new GreenState(false, false, false, null, null, null, []);
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
            sub[0].Errors,
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
