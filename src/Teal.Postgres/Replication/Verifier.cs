using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;

namespace Teal.Postgres.Replication;

/// <summary>
/// Compares blue and green table by table (PRODUCT.md §5). A digest is a row count and the sum
/// of a 64-bit hash of each row (order-independent, computed by the server, summed in 128-bit
/// integers), so digests of parts of a table add up. A large plain table is first read whole in
/// block ranges (TID range scans, PostgreSQL 14+: sequential reads, no index, each side split
/// its own way) whose digests are summed; only a table whose sums differ is read again in
/// primary-key ranges, which line up on both sides, and only a key range that differs is read
/// row by row to name the keys that differ. Both sides are read concurrently by a few
/// connections each. The first round starts once green has applied a marker written on blue;
/// ranges that differ are read again after a new marker: a range whose digests stay the same on
/// both sides is a real difference, one that keeps changing on blue is reported as changing
/// (load), not as a difference.
/// </summary>
internal sealed class Verifier(LinkSessions sessions, Positions positions)
{
    /// <summary>Rows per range: small enough to balance the workers, large enough that round trips do not matter.</summary>
    private const long RowsPerChunk = 100_000;

    /// <summary>Connections per side. Two per side keeps a 2-core server busy without thrashing it.</summary>
    private const int WorkersPerSide = 2;

    private const int Rechecks = 3;

    /// <summary>Differing keys named per table: enough to start looking, not a dump of the table.</summary>
    private const int MaxDifferingKeys = 20;

    private static readonly TimeSpan MarkerTimeout = TimeSpan.FromSeconds(120);

    /// <summary>Values hashed as text, and timestamptz read as timestamp, depend on these: both sides must agree.</summary>
    private const string SessionSettings = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'; SET jit = off";

    public async Task<VerifyReport> VerifyAsync(IProgress<TableVerification>? progress, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        // Catalogs of both sides are read while green catches up with the marker.
        var tablesTask = ReadTablesAsync(cancellationToken);
        var greenTask = ReadGreenTablesAsync(cancellationToken);
        var position = await SyncPointAsync(cancellationToken);
        var tables = await tablesTask;
        var green = await greenTask;

        var results = new TableVerification?[tables.Count];
        var plans = new List<Task<List<Chunk>>>();
        for (var i = 0; i < tables.Count; i++)
        {
            var t = tables[i];
            if (!green.TryGetValue(t.Display, out var greenTable))
            {
                results[i] = new TableVerification(t.Display, 0, 0, string.Empty, string.Empty, 0) { Problem = "missing on green" };
                continue;
            }

            if (t.View && !t.Populated)
            {
                // Unpopulated on blue too: no contents to compare.
                results[i] = new TableVerification(t.Display, 0, 0, string.Empty, string.Empty, 0);
                continue;
            }

            if (t.View && !greenTable.Populated)
            {
                results[i] = new TableVerification(t.Display, 0, 0, string.Empty, string.Empty, 0)
                {
                    Problem = "materialized view populated on blue but not on green (Teal refreshes it before AVAILABLE and at switchover; REFRESH MATERIALIZED VIEW on green fixes it now)",
                };
                continue;
            }

            var missing = t.Columns.Select(c => c.Name).Except(greenTable.Columns).ToList();
            if (missing.Count > 0)
            {
                results[i] = new TableVerification(t.Display, 0, 0, string.Empty, string.Empty, 0) { Problem = $"columns missing on green: {string.Join(", ", missing)}" };
                continue;
            }

            plans.Add(PlanAsync(i, t, cancellationToken));
        }

        var chunks = (await Task.WhenAll(plans)).SelectMany(p => p).ToList();

        // Tables reported as soon as they are settled: those compared whole first, re-checked ones later.
        foreach (var r in results.Where(r => r is not null))
        {
            progress?.Report(r!);
        }

        await RunRoundAsync(chunks, lastRound: false, cancellationToken);
        // A table read whole that differs (or was written meanwhile) is read again in key ranges.
        var refine = chunks.Where(c => c.Refinable && c.Outcome != ChunkOutcome.Matches).ToList();
        chunks.RemoveAll(c => c.Refinable && c.Outcome != ChunkOutcome.Matches);
        var reported = new HashSet<int>();
        ReportSettled(chunks, tables, results, reported, progress);
        if (refine.Count > 0)
        {
            var ranged = (await Task.WhenAll(refine.Select(c => KeyRangesAsync(c.Table, tables[c.Table], cancellationToken)))).SelectMany(r => r).ToList();
            await SyncPointAsync(cancellationToken);
            await RunRoundAsync(ranged, lastRound: false, cancellationToken);
            chunks.AddRange(ranged);
            ReportSettled(chunks, tables, results, reported, progress);
        }
        for (var round = 1; round <= Rechecks && chunks.Any(c => c.Outcome == ChunkOutcome.Pending); round++)
        {
            await SyncPointAsync(cancellationToken);
            await RunRoundAsync(chunks.Where(c => c.Outcome == ChunkOutcome.Pending).ToList(), lastRound: round == Rechecks, cancellationToken);
            ReportSettled(chunks, tables, results, reported, progress);
        }

        ReportSettled(chunks, tables, results, reported, progress, final: true);
        await NameKeysAsync(chunks, tables, results, cancellationToken);
        await NamePartitionsAsync(tables, results, cancellationToken);
        var verified = results.Select(r => r!).ToList();
        var sequencesTask = CompareSequencesAsync(cancellationToken);
        var settingsTask = CompareSettingsAsync(cancellationToken);
        await Task.WhenAll(sequencesTask, settingsTask);
        return new VerifyReport(position.Value, verified)
        {
            Sequences = await sequencesTask,
            Settings = await settingsTask,
            Seconds = Stopwatch.GetElapsedTime(started).TotalSeconds,
        };
    }

    private static string Checksum(decimal sum) => sum.ToString(CultureInfo.InvariantCulture);

    /// <summary>Sums the chunks of every table with no chunk left to re-check, once per table.</summary>
    private static void ReportSettled(List<Chunk> chunks, List<Table> tables, TableVerification?[] results, HashSet<int> reported, IProgress<TableVerification>? progress, bool final = false)
    {
        foreach (var group in chunks.GroupBy(c => c.Table))
        {
            var list = group.ToList();
            if (reported.Contains(group.Key) || (!final && list.Any(c => c.Outcome == ChunkOutcome.Pending)))
            {
                continue;
            }

            var blueSum = list.Aggregate(decimal.Zero, (a, c) => a + c.Blue!.Sum);
            var greenSum = list.Aggregate(decimal.Zero, (a, c) => a + c.Green!.Sum);
            results[group.Key] = new TableVerification(tables[group.Key].Display, list.Sum(c => c.Blue!.Rows), list.Sum(c => c.Green!.Rows), Checksum(blueSum), Checksum(greenSum), list.Sum(c => c.Seconds))
            {
                Chunks = list.Sum(c => Math.Max(c.BlueSql.Count, c.GreenSql.Count)),
                DifferentChunks = list.Count(c => c.Outcome == ChunkOutcome.Different),
                ChangingChunks = list.Count(c => c.Outcome is ChunkOutcome.Pending or ChunkOutcome.Changing),
            };
            reported.Add(group.Key);
            progress?.Report(results[group.Key]!);
        }
    }

    private async Task<ReplicationPosition> SyncPointAsync(CancellationToken cancellationToken)
    {
        var position = await positions.MarkAsync(cancellationToken);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(MarkerTimeout);
        try
        {
            await positions.WaitAsync(position, timeout.Token);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TealException("verify.green-behind", $"green did not reach blue's position {position.Value} within {MarkerTimeout.TotalSeconds:0} s", "check that replication runs (teal show ID) and retry when the lag is small");
        }

        return position;
    }

    private sealed record Column(string Name, string Type);

    private sealed record Table(string Schema, string Name, IReadOnlyList<Column> Columns, string? KeyColumn, double Rows)
    {
        /// <summary>A materialized view: compared by contents, as a table without a key.</summary>
        public bool View { get; init; }

        public bool Populated { get; init; } = true;

        public bool Partitioned { get; init; }

        public string Display => Sql.Display(Schema, Name);

        public string Qualified => Sql.Qualified(Schema, Name);
    }

    /// <summary>
    /// Tables to compare: plain tables and partitioned roots (a root's scan covers its
    /// partitions, so partitions are not compared twice). The key column is the primary key's
    /// first column when it is an integer: the ranges are cut on it.
    /// </summary>
    private async Task<List<Table>> ReadTablesAsync(CancellationToken cancellationToken)
    {
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        var rows = await blue.QueryAsync(
            """
            SELECT n.nspname::text, c.relname::text,
                   array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
                   array(SELECT coalesce(bt.typname, ty.typname)::text FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid LEFT JOIN pg_type bt ON ty.typtype = 'd' AND bt.oid = ty.typbasetype
                         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
                   (SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                    WHERE i.indrelid = c.oid AND i.indisprimary AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)),
                   greatest(c.reltuples, (SELECT coalesce(sum(greatest(p.reltuples, 0)), 0) FROM pg_inherits h JOIN pg_class p ON p.oid = h.inhrelid WHERE h.inhparent = c.oid))::float8,
                   c.relkind::text, c.relispopulated
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition AND c.relpersistence = 'p'
              AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'teal') AND n.nspname NOT LIKE 'pg\_toast%'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
            ORDER BY 1, 2
            """,
            r => new Table(r.GetString(0), r.GetString(1), r.GetFieldValue<string[]>(2).Zip(r.GetFieldValue<string[]>(3), (n, t) => new Column(n, t)).ToList(), r.NullableString(4), r.GetDouble(5))
            {
                View = r.GetString(6) == "m",
                Populated = r.GetBoolean(7),
                Partitioned = r.GetString(6) == "p",
            },
            cancellationToken);
        var filter = sessions.Spec.Tables;
        return filter.Count == 0 ? rows : rows.Where(t => filter.Contains(t.Display) || (t.Schema == "public" && filter.Contains(t.Name))).ToList();
    }

    private sealed record GreenTable(HashSet<string> Columns, bool Populated);

    private async Task<Dictionary<string, GreenTable>> ReadGreenTablesAsync(CancellationToken cancellationToken)
    {
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var rows = await green.QueryAsync(
            """
            SELECT n.nspname || '.' || c.relname,
                   array(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                   c.relispopulated
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            """,
            r => (r.GetString(0), new GreenTable(r.GetFieldValue<string[]>(1).ToHashSet(), r.GetBoolean(2))),
            cancellationToken);
        return rows.ToDictionary(r => r.Item1, r => r.Item2);
    }

    /// <summary>
    /// A partitioned table is compared through its root (one scan covers every partition); when
    /// it differs, its leaf partitions are compared one by one at a new position, so the report
    /// names the partition that differs, not only the parent.
    /// </summary>
    private async Task NamePartitionsAsync(List<Table> tables, TableVerification?[] results, CancellationToken cancellationToken)
    {
        var differing = Enumerable.Range(0, tables.Count).Where(i => tables[i].Partitioned && results[i] is { Problem: null, Matches: false }).ToList();
        if (differing.Count == 0)
        {
            return;
        }

        await SyncPointAsync(cancellationToken);
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        await blue.ExecuteAsync(SessionSettings, cancellationToken);
        await green.ExecuteAsync(SessionSettings, cancellationToken);
        foreach (var i in differing)
        {
            var table = tables[i];
            var leaves = await blue.QueryAsync(
                "SELECT n.nspname::text, c.relname::text FROM pg_partition_tree($1::regclass) t JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.isleaf ORDER BY 1, 2",
                r => (Schema: r.GetString(0), Name: r.GetString(1)),
                cancellationToken,
                table.Qualified);
            var names = new List<string>();
            foreach (var (schema, name) in leaves)
            {
                var sql = $"SELECT count(*), coalesce(sum({RowHash(table)}), 0) FROM ONLY {Sql.Qualified(schema, name)} t";
                var b = await ReadDigestAsync(blue, sql, cancellationToken);
                Digest? g;
                try
                {
                    g = await green.ScalarAsync<string>("SELECT to_regclass($1)::text", cancellationToken, Sql.Qualified(schema, name)) is null ? null : await ReadDigestAsync(green, sql, cancellationToken);
                }
                catch (PostgresException)
                {
                    // Green partitions differently (its own layout is allowed): the parent's verdict stands.
                    g = null;
                }

                if (g != b)
                {
                    names.Add(Sql.Display(schema, name) + (g is null ? " (missing on green)" : string.Empty));
                }
            }

            results[i] = results[i]! with { DifferingPartitions = names };
        }
    }

    /// <summary>
    /// The first reading of a table: whole when small; a large plain table in block ranges on
    /// each side (summed into one digest, refined into key ranges if it differs); otherwise in
    /// key ranges straight away (partitioned roots, servers before 14).
    /// </summary>
    private async Task<List<Chunk>> PlanAsync(int index, Table table, CancellationToken cancellationToken)
    {
        var select = Select(table);
        var count = (long)Math.Ceiling(Math.Max(table.Rows, 1) / RowsPerChunk);
        if (count <= 1)
        {
            return [Chunk.Same(index, select, null)];
        }

        if (!table.Partitioned && !table.View)
        {
            var blue = BlocksAsync(Side.Blue, table, cancellationToken);
            var green = BlocksAsync(Side.Green, table, cancellationToken);
            await Task.WhenAll(blue, green);
            if ((await blue).Version >= 140000 && (await green).Version >= 140000)
            {
                var blueParts = BlockRanges((await blue).Blocks, count).Select(w => select + w).ToList();
                var greenParts = BlockRanges((await green).Blocks, count).Select(w => select + w).ToList();
                return [new Chunk(index, blueParts, greenParts, null) { Refinable = table.KeyColumn is not null }];
            }
        }

        return table.KeyColumn is null ? [Chunk.Same(index, select, null)] : await KeyRangesAsync(index, table, cancellationToken);
    }

    private static string Select(Table table) => $"SELECT count(*), coalesce(sum({RowHash(table)}), 0) FROM {table.Qualified} t";

    /// <summary>Cuts a table into key ranges covering both sides' key span; open-ended at both ends.</summary>
    private async Task<List<Chunk>> KeyRangesAsync(int index, Table table, CancellationToken cancellationToken)
    {
        var select = Select(table);
        var count = (long)Math.Ceiling(Math.Max(table.Rows, 1) / RowsPerChunk);
        if (table.KeyColumn is null)
        {
            return [Chunk.Same(index, select, null)];
        }

        var key = "t." + Sql.Ident(table.KeyColumn);
        if (count <= 1)
        {
            return [Chunk.Same(index, select, string.Empty)];
        }

        var spanSql = $"SELECT min({key})::bigint, max({key})::bigint FROM {table.Qualified} t";
        var blue = SpanAsync(Side.Blue, spanSql, cancellationToken);
        var green = SpanAsync(Side.Green, spanSql, cancellationToken);
        await Task.WhenAll(blue, green);
        var lows = new[] { (await blue).Min, (await green).Min }.OfType<long>().ToList();
        var highs = new[] { (await blue).Max, (await green).Max }.OfType<long>().ToList();
        if (lows.Count == 0)
        {
            return [Chunk.Same(index, select, string.Empty)];
        }

        var lo = lows.Min();
        var hi = highs.Max();
        var width = Math.Max(1, (long)Math.Ceiling(((double)hi - lo + 1) / count));
        var chunks = new List<Chunk>();
        for (var i = 0; i < count; i++)
        {
            var from = (lo + (i * width)).ToString(CultureInfo.InvariantCulture);
            var to = (lo + ((i + 1) * width)).ToString(CultureInfo.InvariantCulture);
            var where = i == 0 ? $" WHERE {key} < {to}" : i == count - 1 ? $" WHERE {key} >= {from}" : $" WHERE {key} >= {from} AND {key} < {to}";
            chunks.Add(Chunk.Same(index, select + where, where));
        }

        return chunks;
    }

    /// <summary>
    /// Block ranges of about equal size over a side's blocks, as WHERE clauses on ctid; the
    /// first has no lower and the last no upper bound, so rows moved or added since are read.
    /// </summary>
    private static List<string> BlockRanges(long blocks, long count)
    {
        count = Math.Min(count, blocks);
        if (count <= 1)
        {
            return [string.Empty];
        }

        var step = (blocks + count - 1) / count;
        var ranges = new List<string>();
        for (long i = 0; i < count; i++)
        {
            var lo = i * step;
            var hi = (i + 1) * step;
            var last = hi >= blocks || i == count - 1;
            var lower = i == 0 ? null : $"t.ctid >= '({lo.ToString(CultureInfo.InvariantCulture)},0)'::tid";
            var upper = last ? null : $"t.ctid < '({hi.ToString(CultureInfo.InvariantCulture)},0)'::tid";
            ranges.Add(" WHERE " + string.Join(" AND ", new[] { lower, upper }.OfType<string>()));
            if (last)
            {
                break;
            }
        }

        return ranges;
    }

    private async Task<(long Blocks, int Version)> BlocksAsync(Side side, Table table, CancellationToken cancellationToken)
    {
        await using var conn = await sessions.OpenAsync(side, cancellationToken);
        var row = await conn.QueryAsync(
            "SELECT pg_relation_size($1::regclass) / current_setting('block_size')::bigint, current_setting('server_version_num')::int",
            r => (r.GetInt64(0), r.GetInt32(1)),
            cancellationToken,
            table.Qualified);
        return row[0];
    }

    /// <summary>
    /// Reads every key range that differs row by row on both sides (key and row hash) and names
    /// the keys whose rows differ or exist on one side only.
    /// </summary>
    private async Task NameKeysAsync(List<Chunk> chunks, List<Table> tables, TableVerification?[] results, CancellationToken cancellationToken)
    {
        var differing = chunks.Where(c => c.Outcome == ChunkOutcome.Different && c.Where is not null && tables[c.Table].KeyColumn is not null).GroupBy(c => c.Table).ToList();
        if (differing.Count == 0)
        {
            return;
        }

        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        await blue.ExecuteAsync(SessionSettings, cancellationToken);
        await green.ExecuteAsync(SessionSettings, cancellationToken);
        foreach (var group in differing)
        {
            var table = tables[group.Key];
            var keys = new SortedSet<long>();
            foreach (var chunk in group)
            {
                var sql = $"SELECT t.{Sql.Ident(table.KeyColumn!)}::bigint, {RowHash(table)} FROM {table.Qualified} t{chunk.Where}";
                var blueRows = ReadRowHashesAsync(blue, sql, cancellationToken);
                var greenRows = ReadRowHashesAsync(green, sql, cancellationToken);
                await Task.WhenAll(blueRows, greenRows);
                var b = await blueRows;
                var g = await greenRows;
                keys.UnionWith(b.Where(r => !g.TryGetValue(r.Key, out var h) || !h.SequenceEqual(r.Value)).Select(r => r.Key));
                keys.UnionWith(g.Keys.Where(k => !b.ContainsKey(k)));
            }

            results[group.Key] = results[group.Key]! with { DifferingKeys = keys.Take(MaxDifferingKeys).Select(k => k.ToString(CultureInfo.InvariantCulture)).ToList() };
        }
    }

    /// <summary>
    /// The row hashes under each key value, sorted: the key column is the primary key's first,
    /// which a composite key repeats (and a green without its key could hold twice).
    /// </summary>
    private static async Task<Dictionary<long, List<long>>> ReadRowHashesAsync(NpgsqlConnection conn, string sql, CancellationToken cancellationToken)
    {
        var rows = await conn.QueryAsync(sql, r => (r.GetInt64(0), r.GetInt64(1)), cancellationToken);
        var hashes = new Dictionary<long, List<long>>(rows.Count);
        foreach (var (key, hash) in rows)
        {
            if (!hashes.TryGetValue(key, out var list))
            {
                hashes[key] = list = [];
            }

            list.Add(hash);
        }

        foreach (var list in hashes.Values)
        {
            list.Sort();
        }

        return hashes;
    }

    /// <summary>
    /// A 64-bit hash of a row without printing it: each column hashed by its type's own hash
    /// function (stable across major versions: hash partitioning depends on them), seeded with
    /// its position so that swapped values differ, NULL as a per-position constant, XORed.
    /// Types without a native hash here are hashed as text. Much cheaper than hashing
    /// <c>row::text</c>: integers and numerics are never formatted.
    /// </summary>
    private static string RowHash(Table table)
    {
        var parts = table.Columns.Select((c, i) =>
        {
            var col = "t." + Sql.Ident(c.Name);
            var seed = (i + 1).ToString(CultureInfo.InvariantCulture);
            var hash = c.Type switch
            {
                "int2" => $"hashint2extended({col}, {seed})",
                "int4" => $"hashint4extended({col}, {seed})",
                "int8" => $"hashint8extended({col}, {seed})",
                "text" or "varchar" => $"hashtextextended({col}, {seed})",
                "bpchar" => $"hashbpcharextended({col}, {seed})",
                "numeric" => $"hash_numeric_extended({col}, {seed})",
                "timestamp" or "timestamptz" => $"timestamp_hash_extended({col}::timestamp, {seed})",
                _ => $"hashtextextended({col}::text, {seed})",
            };
            return $"coalesce({hash}, {(-7919 * (i + 1)).ToString(CultureInfo.InvariantCulture)})";
        });
        return string.Join(" # ", parts);
    }

    private async Task<(long? Min, long? Max)> SpanAsync(Side side, string sql, CancellationToken cancellationToken)
    {
        await using var conn = await sessions.OpenAsync(side, cancellationToken);
        var row = await conn.QueryAsync(sql, r => (r.NullableInt64(0), r.NullableInt64(1)), cancellationToken);
        return row[0];
    }

    private sealed record Digest(long Rows, decimal Sum);

    private enum ChunkOutcome
    {
        Pending,
        Matches,
        Different,
        Changing,
    }

    /// <summary>
    /// A part of a table compared as one digest: the same key range on both sides, or the whole
    /// table read in each side's own block ranges (parts whose digests add up).
    /// </summary>
    private sealed class Chunk(int table, IReadOnlyList<string> blueSql, IReadOnlyList<string> greenSql, string? where)
    {
        public int Table { get; } = table;

        public IReadOnlyList<string> BlueSql { get; } = blueSql;

        public IReadOnlyList<string> GreenSql { get; } = greenSql;

        /// <summary>The key range's WHERE clause (empty for the whole table), to read its rows one by one; null without a key range.</summary>
        public string? Where { get; } = where;

        /// <summary>The whole table in block ranges, to read again in key ranges if it differs.</summary>
        public bool Refinable { get; init; }

        public Digest? Blue { get; set; }

        public Digest? Green { get; set; }

        public Digest? PreviousBlue { get; set; }

        public Digest? PreviousGreen { get; set; }

        public double Seconds { get; set; }

        public ChunkOutcome Outcome { get; set; }

        public static Chunk Same(int table, string sql, string? where) => new(table, [sql], [sql], where);

        public IReadOnlyList<string> Parts(Side side) => side == Side.Blue ? BlueSql : GreenSql;

        /// <summary>Judges the latest reading against the previous one.</summary>
        public void Judge(bool lastRound)
        {
            if (Blue == Green)
            {
                Outcome = ChunkOutcome.Matches;
            }
            else if (PreviousBlue is not null && Blue == PreviousBlue && Green == PreviousGreen)
            {
                Outcome = ChunkOutcome.Different;
            }
            else
            {
                Outcome = lastRound ? ChunkOutcome.Changing : ChunkOutcome.Pending;
            }
        }
    }

    /// <summary>Reads the chunks on both sides at once, <see cref="WorkersPerSide"/> connections each.</summary>
    private async Task RunRoundAsync(List<Chunk> chunks, bool lastRound, CancellationToken cancellationToken)
    {
        foreach (var c in chunks)
        {
            c.PreviousBlue = c.Blue;
            c.PreviousGreen = c.Green;
        }

        var blue = ReadSideAsync(Side.Blue, chunks, cancellationToken);
        var green = ReadSideAsync(Side.Green, chunks, cancellationToken);
        await Task.WhenAll(blue, green);
        foreach (var c in chunks)
        {
            c.Judge(lastRound);
        }
    }

    private async Task ReadSideAsync(Side side, List<Chunk> chunks, CancellationToken cancellationToken)
    {
        // Whole tables (the largest single reads) first, so none is left alone at the end.
        var parts = chunks.SelectMany(c => c.Parts(side).Select(sql => (Chunk: c, Sql: sql)))
            .OrderByDescending(p => p.Sql.Contains("WHERE", StringComparison.Ordinal) ? 0 : 1)
            .ToList();
        var sums = chunks.ToDictionary(c => c, _ => (Rows: 0L, Sum: decimal.Zero, Seconds: 0.0));
        var queue = new ConcurrentQueue<(Chunk Chunk, string Sql)>(parts);
        var workers = Enumerable.Range(0, Math.Min(WorkersPerSide, Math.Max(1, parts.Count))).Select(async _ =>
        {
            await using var conn = await sessions.OpenAsync(side, cancellationToken);
            await conn.ExecuteAsync(SessionSettings, cancellationToken);
            while (queue.TryDequeue(out var part))
            {
                var started = Stopwatch.GetTimestamp();
                var digest = await ReadDigestAsync(conn, part.Sql, cancellationToken);
                var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
                lock (sums)
                {
                    var s = sums[part.Chunk];
                    sums[part.Chunk] = (s.Rows + digest.Rows, s.Sum + digest.Sum, s.Seconds + seconds);
                }
            }
        });
        await Task.WhenAll(workers);
        foreach (var (chunk, sum) in sums)
        {
            var digest = new Digest(sum.Rows, sum.Sum);
            if (side == Side.Blue)
            {
                chunk.Blue = digest;
            }
            else
            {
                chunk.Green = digest;
            }

            lock (chunk)
            {
                chunk.Seconds = Math.Max(chunk.Seconds, sum.Seconds);
            }
        }
    }

    private static async Task<Digest> ReadDigestAsync(NpgsqlConnection conn, string sql, CancellationToken cancellationToken)
    {
        var row = await conn.QueryAsync(sql, r => new Digest(r.GetInt64(0), r.GetDecimal(1)), cancellationToken);
        return row[0];
    }

    /// <summary>Before switchover green's sequences trail blue's on purpose; only a missing sequence is a difference.</summary>
    private async Task<IReadOnlyList<SequenceComparison>> CompareSequencesAsync(CancellationToken cancellationToken)
    {
        var blue = positions.ReadSequencesAsync(Side.Blue, cancellationToken);
        var green = positions.ReadSequencesAsync(Side.Green, cancellationToken);
        await Task.WhenAll(blue, green);
        var greenByName = (await green).ToDictionary(s => s.Name);
        return (await blue).Select(b => greenByName.TryGetValue(b.Name, out var g)
            ? new SequenceComparison(b.Name, b.LastValue, g.LastValue)
            : new SequenceComparison(b.Name, b.LastValue, null) { Matches = false }).ToList();
    }

    private async Task<IReadOnlyList<SettingComparison>> CompareSettingsAsync(CancellationToken cancellationToken)
    {
        var spec = sessions.Spec;
        var result = new List<SettingComparison>();
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        if (spec.ExpectedGreenVersion is { } expected)
        {
            var actual = (await green.ScalarAsync<string>("SELECT current_setting('server_version')", cancellationToken))!.Split(' ', 2)[0];
            var parts = expected.Split('.').Length;
            result.Add(new SettingComparison("server_version", expected, string.Join('.', actual.Split('.').Take(parts))));
        }

        foreach (var (name, expectedValue) in spec.ExpectedGreenParameters.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            var row = await green.QueryAsync(
                "SELECT current_setting(name), setting, coalesce(unit, ''), vartype FROM pg_settings WHERE name = lower($1)",
                r => (Shown: r.GetString(0), Raw: r.GetString(1), Unit: r.GetString(2), Type: r.GetString(3)),
                cancellationToken,
                name);
            if (row.Count == 0)
            {
                result.Add(new SettingComparison(name, expectedValue, "(no such parameter)"));
                continue;
            }

            var same = SettingValues.Equivalent(expectedValue, row[0].Shown, row[0].Raw, row[0].Unit, row[0].Type);
            result.Add(new SettingComparison(name, expectedValue, same ? expectedValue : row[0].Shown));
        }

        return result;
    }
}
