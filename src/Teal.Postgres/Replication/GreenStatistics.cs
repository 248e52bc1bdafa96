using System.Diagnostics;
using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Guardrails;

namespace Teal.Postgres.Replication;

/// <summary>
/// Green's planner statistics and visibility map after the initial copy. The copy writes every
/// row of every table in one transaction per table and leaves no statistics behind (pg_dump
/// carries none before PostgreSQL 18, and nobody analyzes an empty table into anything useful):
/// until autovacuum happens to get there — partitioned roots never, autovacuum skips them — the
/// planner guesses, and the first reads of each page set its hint bits and so write it. One
/// <c>VACUUM (ANALYZE)</c> per table before AVAILABLE pays all of that up front, off the
/// production path; the guardrail <c>green.statistics</c> refuses a switchover onto a green
/// where a table holding rows has no statistics.
/// </summary>
internal sealed class GreenStatistics(LinkSessions sessions)
{
    /// <summary>
    /// Tables on green Teal looks after: plain and partitioned tables outside the system schemas,
    /// Teal's own and extensions' (a partition is vacuumed and analyzed through its root, which
    /// is also the only way its root gets statistics).
    /// </summary>
    private const string UserTables = """
        c.relkind IN ('r', 'p') AND c.relpersistence = 'p'
        AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'teal') AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
        """;

    private sealed record Table(string Schema, string Name, long Bytes)
    {
        public string Display => Sql.Display(Schema, Name);
    }

    /// <summary>VACUUM (ANALYZE) every top-level table on green, one at a time, reporting each.</summary>
    public async Task<IReadOnlyList<string>> PrepareAsync(IProgress<TablePrepared>? progress, CancellationToken cancellationToken)
    {
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var tables = await green.QueryAsync(
            $"""
            SELECT n.nspname::text, c.relname::text,
                   -- pg_partition_tree lists nothing for a table that is not partitioned.
                   CASE c.relkind WHEN 'p' THEN coalesce((SELECT sum(pg_table_size(t.relid)) FROM pg_partition_tree(c.oid) t), 0) ELSE pg_table_size(c.oid) END::int8
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {UserTables} AND NOT c.relispartition
            ORDER BY 1, 2
            """,
            r => new Table(r.GetString(0), r.GetString(1), r.GetInt64(2)),
            cancellationToken);
        var total = tables.Sum(t => t.Bytes);
        long done = 0;
        var processed = new List<string>(tables.Count);
        foreach (var table in tables)
        {
            var started = Stopwatch.GetTimestamp();
            try
            {
                // One statement outside a transaction block (VACUUM refuses to run in one).
                await green.ExecuteAsync($"VACUUM (ANALYZE) {Sql.Qualified(table.Schema, table.Name)}", cancellationToken);
            }
            catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.UndefinedTable)
            {
                // Dropped on blue (and by replicated DDL handling on green) meanwhile: nothing to prepare.
                continue;
            }

            done += table.Bytes;
            processed.Add(table.Display);
            progress?.Report(new TablePrepared(table.Display, processed.Count, tables.Count, done, total, Stopwatch.GetElapsedTime(started).TotalSeconds));
        }

        return processed;
    }

    /// <summary>
    /// Tables copied after create (<c>teal add-tables</c>) are copied by the subscription in the
    /// background: once every table of the subscription is ready, vacuums and analyzes those
    /// never vacuumed nor analyzed on green, as ANALYZE_GREEN did for the initial copy. Runs
    /// detached from the request; if Teal stops first, the guardrail names what is left.
    /// </summary>
    public async Task PrepareWhenCopiedAsync(CancellationToken cancellationToken)
    {
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        while (await green.ScalarAsync<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_subscription_rel sr JOIN pg_subscription s ON s.oid = sr.srsubid WHERE s.subname = $1 AND sr.srsubstate <> 'r')",
            cancellationToken,
            sessions.Spec.Name))
        {
            await Task.Delay(TimeSpan.FromMilliseconds(500), cancellationToken);
        }

        foreach (var t in await NeverAnalyzedAsync(green, cancellationToken))
        {
            try
            {
                await green.ExecuteAsync($"VACUUM (ANALYZE) {Sql.Qualified(t.Schema, t.Name)}", cancellationToken);
            }
            catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.UndefinedTable)
            {
                // Dropped meanwhile.
            }
        }
    }

    /// <summary>
    /// Fails when a table the subscription copied holds rows and was never vacuumed nor analyzed on green: no
    /// planner statistics, and <c>reltuples</c> still -1 (PostgreSQL 14+; 0 before), as the
    /// schema copy left it (CREATE INDEX on a never-vacuumed empty table keeps it unknown). A
    /// table that was empty when ANALYZE_GREEN ran has <c>reltuples</c> 0 and passes: rows that
    /// replication adds later are autovacuum's to analyze, like on any busy server. The
    /// candidates come from the catalog; each is then confirmed to hold a row.
    /// </summary>
    public async Task<CheckResult> CheckAsync(CancellationToken cancellationToken)
    {
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var candidates = await NeverAnalyzedAsync(green, cancellationToken);
        var stale = new List<string>();
        foreach (var t in candidates)
        {
            if (await green.ScalarAsync<bool>($"SELECT EXISTS (SELECT 1 FROM {Sql.Qualified(t.Schema, t.Name)})", cancellationToken))
            {
                stale.Add(t.Display);
            }
        }

        if (stale.Count == 0)
        {
            return CheckResult.Pass("green.statistics", "every table on green was vacuumed and analyzed since its copy (or holds no rows)");
        }

        var names = string.Join(", ", stale.Take(10)) + (stale.Count > 10 ? $" and {stale.Count - 10} more" : string.Empty);
        var quoted = string.Join(", ", stale.Take(10).Select(Sql.QualifiedFromDisplay));
        return CheckResult.Fail(
            "green.statistics",
            $"{stale.Count} table(s) on green hold rows but were never vacuumed nor analyzed since their copy, so green's planner would guess their sizes and first reads would rewrite every page: {names}",
            $"on green as Teal's login (teal instance url GREEN --as-teal): SET default_transaction_read_only = off; VACUUM (ANALYZE) {quoted}");
    }

    /// <summary>
    /// Tables of the subscription (those a copy wrote: plain tables and partitioned roots) with
    /// no statistics and <c>reltuples</c> unknown: never vacuumed nor analyzed on green. A
    /// partition created on green later (replayed DDL) fills through replication like any table
    /// of a busy server: autovacuum's.
    /// </summary>
    private Task<List<Table>> NeverAnalyzedAsync(NpgsqlConnection green, CancellationToken cancellationToken) =>
        green.QueryAsync(
            $"""
            SELECT n.nspname::text, c.relname::text
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {UserTables}
              AND (c.reltuples < 0 OR (c.reltuples = 0 AND current_setting('server_version_num')::int < 140000))
              AND NOT EXISTS (SELECT 1 FROM pg_stats s WHERE s.schemaname = n.nspname AND s.tablename = c.relname)
              AND c.oid IN (SELECT sr.srrelid FROM pg_subscription_rel sr JOIN pg_subscription s ON s.oid = sr.srsubid WHERE s.subname = $1)
            ORDER BY 1, 2
            """,
            r => new Table(r.GetString(0), r.GetString(1), 0),
            cancellationToken,
            sessions.Spec.Name);
}
