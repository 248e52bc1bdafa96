using Npgsql;
using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.Core.Guardrails;

namespace Teal.Postgres.Replication;

/// <summary>Engine-side guardrails of a switchover (PRODUCT.md §6); all run, all reported, nothing changed.</summary>
internal sealed class SwitchoverChecks(LinkSessions sessions, StatusReader status, Logins logins, GreenStatistics statistics, CdcSlots cdc)
{
    /// <summary>Sessions that are not Teal's, not replication and not this query: clients.</summary>
    private const string ClientSessions = Fencing.ClientSessions;

    public async Task<CheckReport> RunAsync(SwitchoverGuardrailOptions options, CancellationToken cancellationToken)
    {
        var snapshot = await status.ReadAsync(cancellationToken);
        var results = new List<CheckResult>
        {
            snapshot.WorkerRunning && snapshot.State is ReplicationState.Replicating or ReplicationState.Degraded
                ? CheckResult.Pass("replication.healthy", "the subscription is enabled, its apply worker runs and every table is copied")
                : CheckResult.Fail("replication.healthy", $"replication is {snapshot.State.ToString().ToUpperInvariant()}: {snapshot.Reason ?? "the apply worker is not running"}", "wait for the initial copy to finish, or check green's server log and the subscription (pg_stat_subscription)"),
            Lag(snapshot, options),
            snapshot.PendingDdl.Count == 0
                ? CheckResult.Pass("replication.ddl", "no unacknowledged DDL on blue")
                : CheckResult.Fail("replication.ddl", $"{snapshot.PendingDdl.Count} DDL statement(s) on blue are not acknowledged, first #{snapshot.PendingDdl[0].Id}: {snapshot.PendingDdl[0].Statement}", "run them on green with `teal apply-ddl DEPLOYMENT`, or apply them yourself and acknowledge them (`teal ack-ddl DEPLOYMENT`)"),
            snapshot.SkippedTables.Count == 0
                ? CheckResult.Pass("replication.skipped-tables", "every table on blue is replicated")
                : CheckResult.Fail("replication.skipped-tables", $"tables not replicated to green: {string.Join(", ", snapshot.SkippedTables)}", "add them with `teal add-tables DEPLOYMENT` and wait for their copy"),
        };

        await using (var green = await sessions.OpenAsync(Side.Green, cancellationToken))
        {
            var clients = await green.QueryAsync(
                $"SELECT usename || '@' || coalesce(nullif(application_name, ''), '?') || CASE WHEN backend_xid IS NOT NULL THEN ' (writing)' ELSE '' END FROM pg_stat_activity WHERE {ClientSessions} ORDER BY backend_start",
                r => r.GetString(0),
                cancellationToken);
            results.Add(clients.Count == 0
                ? CheckResult.Pass("green.no-clients", "no client sessions on green")
                : CheckResult.Fail("green.no-clients", $"{clients.Count} client session(s) on green: {string.Join(", ", clients.Take(5))}", "disconnect them: until switchover green must only be written by replication"));

            // Green is fenced from the start of replication; a role given LOGIN back by hand
            // would let clients in (and open-green would not know to keep or restore it). A
            // managed green is fenced by its pg_hba.conf instead; if that file is no longer
            // Teal's, only NOLOGIN on every role would still keep clients out.
            if (Fencing.FencedByHba(sessions.Spec, Side.Green) && await HbaFence.IsClosedAsync(green, cancellationToken))
            {
                results.Add(CheckResult.Pass("green.fence", $"green is fenced: its pg_hba.conf admits only {LinkSessions.ControlRole} (its readers admit clients, read-only)"));
            }
            else
            {
                var logins = await green.QueryAsync(
                    $"SELECT rolname::text FROM pg_roles WHERE rolcanlogin AND rolname <> '{LinkSessions.ControlRole}' ORDER BY 1",
                    r => r.GetString(0),
                    cancellationToken);
                results.Add(logins.Count == 0
                    ? CheckResult.Pass("green.fence", "green is fenced: no role but Teal's can log in")
                    : CheckResult.Fail(
                        "green.fence",
                        $"green is not fenced for {logins.Count} role(s) that can log in: {string.Join(", ", logins.Take(10))}",
                        $"on green, for each: GRANT {Fencing.LoginsRole} TO role; ALTER ROLE role NOLOGIN (the switchover gives LOGIN back to the members of {Fencing.LoginsRole})"));
            }
        }

        bool blueSuperuser;
        await using (var blue = await sessions.OpenAsync(Side.Blue, cancellationToken))
        {
            blueSuperuser = await LinkSessions.IsSuperuserAsync(blue, cancellationToken);
        }

        // The logins check reads pg_authid, which only a superuser may.
        results.Add(blueSuperuser
            ? await logins.CheckAsync(cancellationToken)
            : CheckResult.Warn("green.logins", "not checked: reading blue's password verifiers (pg_authid) needs a superuser", "see blue.fence-privileges"));
        results.Add(blueSuperuser
            ? CheckResult.Pass("blue.fence-privileges", $"{LinkSessions.ControlRole} is a superuser on blue: the fence can take LOGIN from every role and end every session")
            : CheckResult.Fail(
                "blue.fence-privileges",
                $"{LinkSessions.ControlRole} is not a superuser on blue: the fence could neither take LOGIN from superusers nor end their sessions, so blue could take writes after green opens",
                $"on blue, as a superuser: ALTER ROLE {LinkSessions.ControlRole} SUPERUSER (the create and replication ran without it; the switchover and Teal's copy of blue's passwords to green need it)"));
        results.Add(sessions.Spec.Reversed
            ? CheckResult.Pass("green.statistics", "switching back: the old blue keeps its own statistics, nothing was copied to it")
            : await statistics.CheckAsync(cancellationToken));
        if (sessions.Spec.ReverseReplication)
        {
            results.Add(await ReverseReadyAsync(cancellationToken));
        }

        if (sessions.Spec.CdcSlots.Count > 0)
        {
            results.Add(await cdc.CheckAsync(cancellationToken));
        }

        await using (var blue = await sessions.OpenAsync(Side.Blue, cancellationToken))
        {
            var name = sessions.Spec.Name;
            var cdcSlots = sessions.Spec.CdcSlots.ToArray();
            var external = new List<string>();
            // With CDC slots, blue's publications are their consumers' and go to green with them.
            if (cdcSlots.Length == 0)
            {
                external.AddRange(await blue.QueryAsync("SELECT 'publication ' || pubname FROM pg_publication WHERE pubname <> $1 AND pubname NOT LIKE 'teal\\_%'", r => r.GetString(0), cancellationToken, name));
            }

            // Table-sync slots (pg_<suboid>_sync_<relid>_<sysid>) are transient copies, not consumers.
            external.AddRange(await blue.QueryAsync(
                "SELECT 'slot ' || slot_name FROM pg_replication_slots WHERE slot_name <> $1 AND slot_name NOT LIKE 'pg\\_%\\_sync\\_%' AND slot_name NOT LIKE 'teal\\_%' AND slot_name <> ALL($2)",
                r => r.GetString(0),
                cancellationToken,
                name,
                cdcSlots));
            external.AddRange(await blue.QueryAsync("SELECT 'subscription ' || subname FROM pg_subscription", r => r.GetString(0), cancellationToken));
            results.Add(external.Count == 0
                ? CheckResult.Pass("blue.external-replication", "blue has no replication Teal does not manage")
                : CheckResult.Fail("blue.external-replication", $"blue has replication Teal does not manage: {string.Join(", ", external)}", "its consumers would miss the switchover: move or drop them first"));

            var longWrites = await blue.QueryAsync(
                $"""
                SELECT pid, usename::text, extract(epoch FROM clock_timestamp() - xact_start)::float8, left(query, 120)
                FROM pg_stat_activity
                WHERE {ClientSessions} AND backend_xid IS NOT NULL AND xact_start < clock_timestamp() - $1::interval
                ORDER BY xact_start
                """,
                r => $"pid {r.GetInt32(0)} ({r.GetString(1)}, {r.GetDouble(2):0} s): {r.GetString(3)}",
                cancellationToken,
                options.LongTransactionThreshold);
            var prepared = await Fencing.PreparedTransactionsAsync(blue, cancellationToken);
            results.Add(prepared.Count == 0
                ? CheckResult.Pass("blue.prepared-transactions", "no prepared transaction on blue")
                : CheckResult.Fail("blue.prepared-transactions", $"{prepared.Count} prepared transaction(s) on blue: {string.Join(", ", prepared.Take(5))}; once blue is fenced no client could commit them", "have their transaction manager COMMIT PREPARED or ROLLBACK PREPARED them first"));
            results.Add(await FenceScopeAsync(blue, options, cancellationToken));

            results.Add(longWrites.Count == 0
                ? CheckResult.Pass("blue.long-transactions", $"no write transaction on blue older than {options.LongTransactionThreshold.TotalSeconds:0} s")
                : CheckResult.Fail("blue.long-transactions", $"{longWrites.Count} write transaction(s) on blue older than {options.LongTransactionThreshold.TotalSeconds:0} s: {string.Join("; ", longWrites.Take(3))}", "let them finish (or end them) before the switchover; the drain would terminate them"));
        }

        return new CheckReport(results);
    }

    /// <summary>
    /// The fence acts on logins and the drain on every client session of the server, so it
    /// locks out the other databases on blue too: list them with their client sessions, and
    /// refuse unless the operator accepted it. template0/template1 hold no sessions of their
    /// own. The maintenance database <c>postgres</c> is left out while no client uses it: every
    /// server has it, tools connect there for a moment, and an empty, unused one is nobody's
    /// application; with sessions it is listed like any other.
    /// </summary>
    private async Task<CheckResult> FenceScopeAsync(NpgsqlConnection blue, SwitchoverGuardrailOptions options, CancellationToken cancellationToken)
    {
        var others = await blue.QueryAsync(
            $"""
            SELECT d.datname::text, (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid AND {ClientSessions})
            FROM pg_database d
            WHERE d.datname <> current_database() AND d.datname NOT IN ('template0', 'template1')
            ORDER BY 1
            """,
            r => (Database: r.GetString(0), Sessions: r.GetInt64(1)),
            cancellationToken);
        var affected = others.Where(o => o.Database != LinkSessions.MaintenanceDatabase || o.Sessions > 0).ToList();
        if (affected.Count == 0)
        {
            return CheckResult.Pass("blue.fence-scope", $"the fence locks out only {sessions.Spec.Blue.Database}: blue's server has no other database in use");
        }

        var listed = string.Join(", ", affected.Select(o => $"{o.Database} ({o.Sessions} session(s))"));
        return options.FenceWholeServer
            ? CheckResult.Pass("blue.fence-scope", $"the fence locks out the whole server, as accepted: also {listed}")
            : CheckResult.Fail(
                "blue.fence-scope",
                $"the fence takes LOGIN server-wide, so it also locks out these databases on blue's server: {listed}",
                "move them off blue's server first, or accept it with --fence-whole-server (their clients cannot log in to the old blue after the switchover either)");
    }

    /// <summary>
    /// Replication back to blue needs green to publish: a logical WAL level and a free slot
    /// (the slot is made while clients are held, past the point of no return, so it must not fail there).
    /// </summary>
    private async Task<CheckResult> ReverseReadyAsync(CancellationToken cancellationToken)
    {
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var (walLevel, freeSlots) = (await green.QueryAsync(
            "SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int - (SELECT count(*)::int FROM pg_replication_slots)",
            r => (r.GetString(0), r.GetInt32(1)),
            cancellationToken))[0];
        var hasSlot = await green.ScalarAsync<bool>("SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", cancellationToken, sessions.Spec.Name);
        if (walLevel != "logical")
        {
            return CheckResult.Fail("green.reverse-replication", $"green's wal_level is {walLevel}: it cannot replicate back to blue after the switchover", "set wal_level = logical on green and restart it, or create the deployment with --no-reverse-replication");
        }

        return freeSlots > 0 || hasSlot
            ? CheckResult.Pass("green.reverse-replication", "green can replicate back to blue after the switchover (wal_level logical, a free slot)")
            : CheckResult.Fail("green.reverse-replication", "green has no free replication slot for replication back to blue", "raise max_replication_slots on green and restart it, or drop a slot it does not need");
    }

    private static CheckResult Lag(ReplicationSnapshot snapshot, SwitchoverGuardrailOptions options)
    {
        if (snapshot.LagBytes is not { } bytes)
        {
            return CheckResult.Fail("replication.lag", "the lag is unknown (no replication slot on blue)", "check that replication runs");
        }

        var drain = TimeSpan.FromSeconds((double)bytes / options.DrainBytesPerSecond);
        // Half of the timeout at most: the rest is for the fence, the drain and the endpoint flip.
        return drain <= options.SwitchoverTimeout / 2
            ? CheckResult.Pass("replication.lag", $"lag {bytes} bytes, {snapshot.LagSeconds ?? 0:0.00} s; drains in about {drain.TotalSeconds:0.0} s")
            : CheckResult.Fail("replication.lag", $"lag {bytes} bytes would take about {drain.TotalSeconds:0} s to drain, more than half the {options.SwitchoverTimeout.TotalSeconds:0} s switchover timeout", "wait for green to catch up, reduce the load on blue, or raise --switchover-timeout");
    }
}
