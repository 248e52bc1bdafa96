using System.Globalization;
using Teal.Core.Engines;
using Teal.Core.Guardrails;
using Teal.MySql.Connections;

namespace Teal.MySql.Replication;

/// <summary>
/// Engine-side switchover guardrails (PRODUCT.md §6) for MariaDB: green's replica threads
/// healthy, lag drainable within the timeout, no client sessions or own writes on green, blue
/// not itself a replica, no long transaction or DDL running on blue.
/// </summary>
internal sealed class SwitchoverChecks(LinkSessions sessions, StatusReader status)
{
    public async Task<CheckReport> RunAsync(SwitchoverGuardrailOptions options, CancellationToken cancellationToken)
    {
        var results = new List<CheckResult>();
        var snapshot = await status.ReadAsync(cancellationToken);
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);

        results.Add(snapshot.State == Core.Deployments.ReplicationState.Replicating
            ? CheckResult.Pass("replication-health", "green's replication IO and SQL threads are running")
            : CheckResult.Fail("replication-health", snapshot.Reason ?? $"replication is {snapshot.State}", "fix green's replication (SHOW SLAVE STATUS on green) and wait until `teal show` says REPLICATING"));

        var budget = options.SwitchoverTimeout.TotalSeconds / 2;
        var drainSeconds = (snapshot.LagBytes ?? 0) / (double)options.DrainBytesPerSecond;
        results.Add((snapshot.LagSeconds ?? 0) <= budget && drainSeconds <= budget
            ? CheckResult.Pass("replication-lag", $"lag {snapshot.LagSeconds ?? 0:0.00} s, {snapshot.LagBytes ?? 0} binlog bytes, {snapshot.LagTransactions ?? 0} transactions")
            : CheckResult.Fail("replication-lag", $"lag {snapshot.LagSeconds ?? 0:0.0} s, {snapshot.LagBytes ?? 0} binlog bytes, {snapshot.LagTransactions ?? 0} transactions: too much to drain within half the {options.SwitchoverTimeout.TotalSeconds:0} s timeout", "wait for green to catch up, or raise --switchover-timeout"));

        var greenSessions = await Fencing.ClientSessionsAsync(green, cancellationToken);
        results.Add(greenSessions.Count == 0
            ? CheckResult.Pass("green-sessions", "no client sessions on green")
            : CheckResult.Fail("green-sessions", $"{greenSessions.Count} client session(s) on green: {string.Join(", ", greenSessions.Select(s => s.User).Distinct().Take(10))}", "disconnect them: green must have no clients before it opens"));

        var greenServer = await Sql.LongAsync(green, "SELECT @@global.server_id", cancellationToken);
        var greenBinlog = GtidPosition.Parse(await Sql.StringAsync(green, "SELECT @@global.gtid_binlog_pos", cancellationToken));
        results.Add(!greenBinlog.WrittenBy(greenServer)
            ? CheckResult.Pass("green-writes", "green has written nothing of its own")
            : CheckResult.Fail("green-writes", $"green's binlog has transactions of its own (server_id {greenServer}: {greenBinlog}), which blue does not have", "find who wrote on green; delete the deployment and create it again if the data diverged"));

        var blueReplicas = await ReplicaStatus.ReadAllAsync(blue, cancellationToken);
        results.Add(blueReplicas.Count == 0
            ? CheckResult.Pass("external-replication", "blue replicates from no other server")
            : CheckResult.Fail("external-replication", $"blue is a replica of {string.Join(", ", blueReplicas.Select(r => $"{r.MasterHost}:{r.MasterPort}"))}: writes arriving there after the fence would be lost", "stop that replication on blue (STOP SLAVE; RESET SLAVE ALL) before switching over"));

        var threshold = (long)options.LongTransactionThreshold.TotalSeconds;
        var clients = (await Fencing.ClientSessionsAsync(blue, cancellationToken)).ToDictionary(s => s.Id);
        var transactions = await Sql.RowsAsync(blue, "SELECT trx_mysql_thread_id, TIMESTAMPDIFF(SECOND, trx_started, NOW()) AS age FROM information_schema.INNODB_TRX WHERE trx_rows_modified > 0 OR trx_state <> 'RUNNING' OR trx_is_read_only = 0", cancellationToken);
        var longWrites = transactions
            .Where(t => clients.ContainsKey(long.Parse(t["trx_mysql_thread_id"]!, CultureInfo.InvariantCulture)) && long.Parse(t["age"] ?? "0", CultureInfo.InvariantCulture) >= threshold)
            .Select(t => $"session {t["trx_mysql_thread_id"]} ({clients[long.Parse(t["trx_mysql_thread_id"]!, CultureInfo.InvariantCulture)].User}, {t["age"]} s)")
            .ToList();
        var ddl = clients.Values.Where(s => s.Command == "Query" && s.Seconds >= threshold && s.Info is { } q && IsDdl(q)).Select(s => $"session {s.Id} ({s.User}, {s.Seconds} s): {Shorten(s.Info!)}").ToList();
        results.Add(longWrites.Count == 0 && ddl.Count == 0
            ? CheckResult.Pass("long-transactions", $"no write transaction or DDL on blue older than {threshold} s")
            : CheckResult.Fail("long-transactions", $"running on blue for {threshold} s or more: {string.Join("; ", longWrites.Concat(ddl).Take(10))}", "let them finish or end them, then switch over; the fence would otherwise wait for them or cut them off"));

        return new CheckReport(results);
    }

    private static bool IsDdl(string query)
    {
        var q = query.TrimStart().ToUpperInvariant();
        return q.StartsWith("ALTER", StringComparison.Ordinal) || q.StartsWith("CREATE", StringComparison.Ordinal) || q.StartsWith("DROP", StringComparison.Ordinal)
            || q.StartsWith("RENAME", StringComparison.Ordinal) || q.StartsWith("TRUNCATE", StringComparison.Ordinal) || q.StartsWith("OPTIMIZE", StringComparison.Ordinal);
    }

    private static string Shorten(string text) => text.Length <= 80 ? text : text[..77] + "…";
}
