using System.Collections.Concurrent;
using System.Globalization;
using Npgsql;
using Npgsql.Replication;
using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Postgres.Connections;

namespace Teal.Postgres.Replication;

/// <summary>
/// The initial copy in parallel (<see cref="LinkSpec.CopyParallelism"/> &gt; 1), instead of the
/// subscription's copy_data, which copies each table in one stream. Blue's replication slot is
/// created over a replication connection that exports its snapshot; that many worker sessions
/// on blue import the snapshot (<c>SET TRANSACTION SNAPSHOT</c>) and each COPY a range of a
/// table (primary-key ranges for an integer key, block ranges otherwise; small tables whole)
/// straight into green in binary. Everything the snapshot saw is on green, and the slot holds
/// every change after it, so the subscription made on that slot with copy_data = false loses
/// and doubles nothing. Green's secondary indexes and foreign keys are dropped before and built
/// after the rows (a bulk load into indexes and checked keys is many times slower); their
/// definitions are kept in a table on green so a copy cut off by a crash builds them all.
/// <para>
/// A copy cannot resume: the exported snapshot ends with the session that exported it. So a
/// copy found interrupted (its table on green still there) starts over: green's copied rows
/// are removed and the slot is dropped and made again.
/// </para>
/// </summary>
internal sealed class ParallelCopy(LinkSessions sessions)
{
    /// <summary>
    /// A table at least this large is split in ranges of about this size each: 64 MB, or
    /// TEAL_COPY_CHUNK_BYTES (smaller chunks let tests and quick benchmarks split small tables).
    /// </summary>
    private static readonly long ChunkBytes =
        long.TryParse(Environment.GetEnvironmentVariable("TEAL_COPY_CHUNK_BYTES"), CultureInfo.InvariantCulture, out var bytes) && bytes > 0 ? bytes : 64L * 1024 * 1024;

    private static long SplitBytes => ChunkBytes;

    private readonly ConcurrentDictionary<string, TableCounter> _progress = new(StringComparer.Ordinal);

    private string Name => sessions.Spec.Name;

    /// <summary>Binary COPY is read by a green of blue's major version or newer only.</summary>
    private bool _binary = true;

    /// <summary>Where green keeps the definitions of the indexes and foreign keys dropped for the copy.</summary>
    public string StateTable => Sql.Qualified(TealObjects.Schema, Name + "_copy");

    /// <summary>application_name of the copy's sessions, so a restarted copy can end its predecessor's.</summary>
    private string SessionName => "teal copy " + Name;

    /// <summary>Per-table progress: rows and bytes copied so far.</summary>
    public IReadOnlyList<TableProgress> Progress =>
        _progress.Values.OrderBy(t => t.Table, StringComparer.Ordinal).Select(t => t.Snapshot()).ToList();

    /// <summary>Whether green holds the state of a copy (one that started and whose subscription is not made yet).</summary>
    public async Task<bool> StartedAsync(NpgsqlConnection green, CancellationToken cancellationToken) =>
        await green.ScalarAsync<string>("SELECT to_regclass($1)::text", cancellationToken, StateTable) is not null;

    /// <summary>Marks every table copied and ready (the subscription on the copy's slot exists).</summary>
    public void MarkReady()
    {
        foreach (var counter in _progress.Values)
        {
            counter.Ready = true;
        }
    }

    /// <summary>
    /// Copies every published table from the slot's snapshot and builds green's deferred indexes
    /// and foreign keys. Leaves the slot on blue for the subscription.
    /// </summary>
    public async Task RunAsync(Func<NpgsqlConnection, CancellationToken, Task> dropSlot, CancellationToken cancellationToken)
    {
        var parallelism = Math.Max(1, sessions.Spec.CopyParallelism);
        await using (var green = await sessions.OpenAsync(Side.Green, cancellationToken))
        await using (var blue = await sessions.OpenAsync(Side.Blue, cancellationToken))
        {
            await EndPredecessorAsync(blue, cancellationToken);
            await EndPredecessorAsync(green, cancellationToken);
            const string major = "SELECT current_setting('server_version_num')::int / 10000";
            _binary = await green.ScalarAsync<int>(major, cancellationToken) >= await blue.ScalarAsync<int>(major, cancellationToken);
            // The slot of an interrupted copy points at a snapshot that is gone.
            await dropSlot(blue, cancellationToken);
            var tables = await PublishedTablesAsync(blue, cancellationToken);
            foreach (var t in tables)
            {
                _progress[t.Display] = new TableCounter(t.Display);
            }

            if (await StartedAsync(green, cancellationToken))
            {
                await ClearAsync(green, tables, cancellationToken);
            }

            await DeferAsync(green, cancellationToken);
        }

        var connection = PostgresConnections.Builder(sessions.Connection(Side.Blue), pooling: false);
        connection.ApplicationName = SessionName;
        await using (var replication = new LogicalReplicationConnection(connection.ConnectionString))
        {
            await replication.Open(cancellationToken);
            // The snapshot stays importable while this connection stays open and runs nothing else.
            var slot = await replication.CreatePgOutputReplicationSlot(Name, temporarySlot: false, slotSnapshotInitMode: LogicalSlotSnapshotInitMode.Export, cancellationToken: cancellationToken);
            var snapshotName = slot.SnapshotName ?? throw new TealException("copy.no-snapshot", "blue exported no snapshot with the replication slot", "blue must be PostgreSQL 10 or newer");
            var chunks = await PlanAsync(snapshotName, parallelism, cancellationToken);
            var queue = new ConcurrentQueue<Chunk>(chunks);
            // One session failing ends the others: the copy starts over anyway.
            using var failed = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            Exception? cause = null;
            var workers = Enumerable.Range(0, Math.Min(parallelism, Math.Max(1, chunks.Count)))
                .Select(_ => Task.Run(
                    async () =>
                    {
                        try
                        {
                            await WorkAsync(snapshotName, queue, failed.Token);
                        }
                        catch (Exception ex)
                        {
                            Interlocked.CompareExchange(ref cause, ex, null);
                            await failed.CancelAsync();
                            throw;
                        }
                    },
                    CancellationToken.None))
                .ToList();
            try
            {
                await Task.WhenAll(workers);
            }
            catch (Exception) when (!cancellationToken.IsCancellationRequested && cause is not null)
            {
                // WhenAll reports the first task's exception, which may be only how the cancel
                // reached another session (Npgsql ends a cancelled COPY and its stream says
                // "disposed"); the session that failed first is the cause.
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(cause);
            }
        }

        await BuildDeferredAsync(parallelism, cancellationToken);
    }

    /// <summary>Drops the copy's state table on green (the subscription is made: nothing is left to build).</summary>
    public async Task ForgetAsync(NpgsqlConnection green, CancellationToken cancellationToken)
    {
        if (await TealObjects.SchemaExistsAsync(green, cancellationToken))
        {
            await green.ExecuteAsync($"DROP TABLE IF EXISTS {StateTable}", cancellationToken);
        }
    }

    private async Task EndPredecessorAsync(NpgsqlConnection conn, CancellationToken cancellationToken)
    {
        // A killed Teal's sessions end when their backends notice the closed socket; a COPY
        // waiting on the network may take a while to, and would hold its locks meanwhile.
        for (var attempt = 0; attempt < 100; attempt++)
        {
            var pids = await conn.QueryAsync(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()",
                r => r.GetInt32(0),
                cancellationToken,
                SessionName);
            if (pids.Count == 0)
            {
                return;
            }

            await conn.ExecuteAsync("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", cancellationToken, pids.ToArray());
            await Task.Delay(50, cancellationToken);
        }
    }

    private sealed record CopyTable(string Schema, string Table, char Kind, IReadOnlyList<string> Columns, bool Binary)
    {
        public string Display => Sql.Display(Schema, Table);

        public string Qualified => Sql.Qualified(Schema, Table);
    }

    private sealed record Chunk(CopyTable Table, string? Where, long Bytes);

    /// <summary>
    /// Tables to copy, each with whether it can travel in binary: every column's type (or a
    /// domain's base type) has binary send and receive functions, and its binary form carries
    /// no type OID of blue's own (arrays of user types and composites do, and green's OIDs
    /// differ: those go as text, as do all tables when green is older than blue).
    /// </summary>
    private async Task<List<CopyTable>> PublishedTablesAsync(NpgsqlConnection blue, CancellationToken cancellationToken)
    {
        var rows = await blue.QueryAsync(
            """
            SELECT pt.schemaname::text, pt.tablename::text, c.relkind::text,
                   array_agg(a.attname::text ORDER BY a.attnum),
                   bool_and(t.typsend <> 0 AND t.typreceive <> 0 AND t.typtype NOT IN ('c', 'd') AND NOT (t.typelem >= 16384)
                            OR t.typtype = 'd' AND b.typsend <> 0 AND b.typreceive <> 0 AND b.typtype NOT IN ('c', 'd') AND NOT (b.typelem >= 16384))
            FROM pg_publication_tables pt
            JOIN pg_namespace n ON n.nspname = pt.schemaname
            JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
            JOIN pg_type t ON t.oid = a.atttypid
            LEFT JOIN pg_type b ON b.oid = t.typbasetype
            WHERE pt.pubname = $1
            GROUP BY 1, 2, 3 ORDER BY 1, 2
            """,
            r => new CopyTable(r.GetString(0), r.GetString(1), r.GetString(2)[0], r.GetFieldValue<string[]>(3), r.GetBoolean(4) && _binary),
            cancellationToken,
            Name);
        return rows;
    }

    /// <summary>
    /// Green's copy of a table from an interrupted copy is removed. Teal's own tables keep the
    /// rows green wrote itself (the fence's record of the overrides it reset on green).
    /// </summary>
    private static async Task ClearAsync(NpgsqlConnection green, IReadOnlyList<CopyTable> tables, CancellationToken cancellationToken)
    {
        var user = tables.Where(t => t.Schema != TealObjects.Schema).Select(t => t.Qualified).ToList();
        if (user.Count > 0)
        {
            // Green's foreign keys are dropped by now (the state table exists), so nothing cascades.
            await green.ExecuteAsync($"TRUNCATE {string.Join(", ", user)}", cancellationToken);
        }

        foreach (var t in tables.Where(t => t.Schema == TealObjects.Schema))
        {
            var filter = t.Table == "fence_overrides" ? " WHERE server_id <> (SELECT system_identifier FROM pg_control_system())" : string.Empty;
            await green.ExecuteAsync($"DELETE FROM {t.Qualified}{filter}", cancellationToken);
        }
    }

    /// <summary>
    /// Records and drops green's foreign keys, plain tables' primary keys and secondary indexes
    /// (not those of unique or exclusion constraints, nor replica identity indexes). All are
    /// built again before the subscription, which needs the keys, is made. Also run again by a
    /// restarted copy: what was built since is found again, and what was recorded stays recorded.
    /// </summary>
    private async Task DeferAsync(NpgsqlConnection green, CancellationToken cancellationToken)
    {
        await using var tx = await green.BeginTransactionAsync(cancellationToken);
        await green.ExecuteAsync(
            $"CREATE TABLE IF NOT EXISTS {StateTable} (seq bigint GENERATED ALWAYS AS IDENTITY, kind text NOT NULL, target text NOT NULL, create_sql text NOT NULL, validate_sql text, PRIMARY KEY (kind, target))",
            cancellationToken);
        const string userSchemas = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'teal') AND n.nspname NOT LIKE 'pg\\_%'";
        var keys = await green.QueryAsync(
            $"""
            SELECT format('%I.%I', n.nspname, t.relname), c.conname::text, pg_get_constraintdef(c.oid), c.convalidated, t.relkind = 'p'
            FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE c.contype = 'f' AND c.conparentid = 0 AND {userSchemas}
            ORDER BY 1, 2
            """,
            r => (Table: r.GetString(0), Name: r.GetString(1), Definition: r.GetString(2), Validated: r.GetBoolean(3), Partitioned: r.GetBoolean(4)),
            cancellationToken);
        foreach (var key in keys)
        {
            var add = $"ALTER TABLE {key.Table} ADD CONSTRAINT {Sql.Ident(key.Name)} {key.Definition}";
            string? validate = null;
            if (key.Validated && !key.Partitioned)
            {
                // Added NOT VALID, the key takes only a brief lock; the validation scans without blocking writes.
                add += " NOT VALID";
                validate = $"ALTER TABLE {key.Table} VALIDATE CONSTRAINT {Sql.Ident(key.Name)}";
            }

            await green.ExecuteAsync($"INSERT INTO {StateTable} (kind, target, create_sql, validate_sql) VALUES ('fk', $1, $2, $3) ON CONFLICT DO NOTHING", cancellationToken, key.Table + "." + key.Name, add, validate);
            await green.ExecuteAsync($"ALTER TABLE {key.Table} DROP CONSTRAINT {Sql.Ident(key.Name)}", cancellationToken);
        }

        // Primary keys of plain tables too: a key built once over the loaded rows costs about a
        // third less on green than one kept up row by row (measured: 2 M rows, 2.4 s against
        // 3.4 s). Not when green's replica identity names the index, nor when something besides
        // the foreign keys dropped above depends on the key (a view grouping by it).
        var primaryKeys = await green.QueryAsync(
            $"""
            SELECT format('%I.%I', n.nspname, t.relname), format('%I.%I', n.nspname, ic.relname), c.conname::text, pg_get_constraintdef(c.oid)
            FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace JOIN pg_class ic ON ic.oid = c.conindid
            WHERE c.contype = 'p' AND t.relkind = 'r' AND NOT t.relispartition AND c.conparentid = 0 AND {userSchemas}
              AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indexrelid = c.conindid AND i.indisreplident)
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.refclassid = 'pg_constraint'::regclass AND d.refobjid = c.oid AND NOT (d.classid = 'pg_class'::regclass AND d.objid = c.conindid))
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = c.conindid AND NOT (d.classid = 'pg_class'::regclass AND d.objid = c.conindid))
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = t.oid AND d.deptype = 'e')
            ORDER BY 1
            """,
            r => (Table: r.GetString(0), Index: r.GetString(1), Name: r.GetString(2), Definition: r.GetString(3)),
            cancellationToken);
        foreach (var key in primaryKeys)
        {
            var add = $"ALTER TABLE {key.Table} ADD CONSTRAINT {Sql.Ident(key.Name)} {key.Definition}";
            await green.ExecuteAsync($"INSERT INTO {StateTable} (kind, target, create_sql) VALUES ('index', $1, $2) ON CONFLICT DO NOTHING", cancellationToken, key.Index, add);
            await green.ExecuteAsync($"ALTER TABLE {key.Table} DROP CONSTRAINT {Sql.Ident(key.Name)}", cancellationToken);
        }

        var indexes = await green.QueryAsync(
            $"""
            SELECT format('%I.%I', n.nspname, ic.relname), pg_get_indexdef(i.indexrelid), t.relkind = 'p'
            FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
            WHERE t.relkind IN ('r', 'p') AND NOT i.indisprimary AND NOT i.indisreplident AND NOT ic.relispartition AND {userSchemas}
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = t.oid AND d.deptype = 'e')
            ORDER BY 1
            """,
            r => (Name: r.GetString(0), Definition: r.GetString(1), Partitioned: r.GetBoolean(2)),
            cancellationToken);
        foreach (var index in indexes)
        {
            // A partitioned table's index reads "ON ONLY": built so, it would not reach the partitions.
            var create = index.Partitioned ? index.Definition.Replace(" ON ONLY ", " ON ", StringComparison.Ordinal) : index.Definition;
            await green.ExecuteAsync($"INSERT INTO {StateTable} (kind, target, create_sql) VALUES ('index', $1, $2) ON CONFLICT DO NOTHING", cancellationToken, index.Name, create);
            await green.ExecuteAsync($"DROP INDEX {index.Name}", cancellationToken);
        }

        await tx.CommitAsync(cancellationToken);
    }

    /// <summary>Splits the tables in chunks, reading sizes and key bounds in the snapshot.</summary>
    private async Task<List<Chunk>> PlanAsync(string snapshotName, int parallelism, CancellationToken cancellationToken)
    {
        await using var blue = await OpenWorkerAsync(Side.Blue, cancellationToken);
        await using var tx = await blue.BeginTransactionAsync(System.Data.IsolationLevel.RepeatableRead, cancellationToken);
        await blue.ExecuteAsync($"SET TRANSACTION SNAPSHOT {Sql.Literal(snapshotName)}", cancellationToken);
        var tables = await PublishedTablesAsync(blue, cancellationToken);
        var blockRanges = await blue.ScalarAsync<int>("SELECT current_setting('server_version_num')::int", cancellationToken) >= 140000;
        var chunks = new List<Chunk>();
        foreach (var table in tables)
        {
            var size = await blue.ScalarAsync<long>(
                "SELECT coalesce(sum(pg_table_size(relid)), 0)::bigint FROM pg_partition_tree($1::regclass) WHERE isleaf",
                cancellationToken,
                table.Qualified);
            // At least four chunks per session: the sessions take the next chunk as they finish,
            // so the last ones end close together instead of one copying a large chunk alone.
            var count = parallelism > 1 && size >= SplitBytes ? (int)Math.Clamp((size + ChunkBytes - 1) / ChunkBytes, parallelism * 4, 4096) : 1;
            var useBlocks = count > 1 && table.Kind == 'r' && blockRanges;
            var key = count > 1 && !useBlocks
                ? await blue.QueryAsync(
                    """
                    SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                    WHERE i.indrelid = $1::regclass AND i.indisprimary AND i.indnatts = 1 AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)
                    """,
                    r => r.GetString(0),
                    cancellationToken,
                    table.Qualified)
                : [];
            List<string?> ranges = [null];
            if (useBlocks)
            {
                // Ranges of blocks (TID range scans, PostgreSQL 14+): sequential reads of equal
                // size, cheaper on blue than key ranges read through the index. A snapshot's rows
                // stay where they are, and the last range is open-ended, so rows in blocks added
                // since the size was read are copied too.
                var blocks = await blue.ScalarAsync<long>("SELECT pg_relation_size($1::regclass) / current_setting('block_size')::bigint", cancellationToken, table.Qualified);
                ranges = Ranges(0, Math.Max(0, blocks - 1), count, "ctid", v => $"'({v.ToString(CultureInfo.InvariantCulture)},0)'::tid");
            }
            else if (key.Count == 1)
            {
                var column = Sql.Ident(key[0]);
                var bounds = await blue.QueryAsync($"SELECT min({column})::bigint, max({column})::bigint FROM {table.Qualified}", r => (Min: r.NullableInt64(0), Max: r.NullableInt64(1)), cancellationToken);
                if (bounds[0] is { Min: { } min, Max: { } max })
                {
                    ranges = Ranges(min, max, count, column, v => v.ToString(CultureInfo.InvariantCulture));
                }
            }

            chunks.AddRange(ranges.Select(where => new Chunk(table, where, size / ranges.Count)));
            _progress[table.Display] = new TableCounter(table.Display) { Chunks = ranges.Count };
        }

        await tx.CommitAsync(cancellationToken);
        // Largest first, so the last sessions do not wait on one big table's single chunk.
        return chunks.OrderByDescending(c => c.Bytes).ToList();
    }

    /// <summary>Half-open ranges [lo, hi) over min..max, the first without a lower and the last without an upper bound.</summary>
    private static List<string?> Ranges(long min, long max, int count, string column, Func<long, string> literal)
    {
        var span = (Int128)max - min + 1;
        count = (int)Int128.Min(count, span);
        var step = (span + count - 1) / count;
        var ranges = new List<string?>();
        for (var i = 0; i < count; i++)
        {
            var lo = (long)(min + (step * i));
            var hi = (Int128)min + (step * (i + 1));
            var lower = i == 0 ? null : $"{column} >= {literal(lo)}";
            var upper = i == count - 1 || hi > max ? null : $"{column} < {literal((long)hi)}";
            ranges.Add(lower is null && upper is null ? null : string.Join(" AND ", new[] { lower, upper }.Where(s => s is not null)));
            if (upper is null)
            {
                break;
            }
        }

        return ranges;
    }

    private async Task WorkAsync(string snapshotName, ConcurrentQueue<Chunk> queue, CancellationToken cancellationToken)
    {
        await using var blue = await OpenWorkerAsync(Side.Blue, cancellationToken);
        await using var green = await OpenWorkerAsync(Side.Green, cancellationToken);
        // Green's triggers must not fire on copied rows (the apply worker skips them too); setting
        // this needs a superuser, which Teal's role on a green it fences is.
        var superuser = await LinkSessions.IsSuperuserAsync(green, cancellationToken);
        if (superuser)
        {
            await green.ExecuteAsync("SET session_replication_role = replica", cancellationToken);
        }

        await green.ExecuteAsync("SET synchronous_commit = off", cancellationToken);
        await using var tx = await blue.BeginTransactionAsync(System.Data.IsolationLevel.RepeatableRead, cancellationToken);
        await blue.ExecuteAsync($"SET TRANSACTION SNAPSHOT {Sql.Literal(snapshotName)}", cancellationToken);
        var buffer = new byte[256 * 1024];
        while (queue.TryDequeue(out var chunk))
        {
            var counter = _progress[chunk.Table.Display];
            counter.Started();
            var columns = string.Join(", ", chunk.Table.Columns.Select(Sql.Ident));
            var from = chunk.Table.Kind == 'p' ? chunk.Table.Qualified : "ONLY " + chunk.Table.Qualified;
            var where = chunk.Where is null ? string.Empty : " WHERE " + chunk.Where;
            var format = chunk.Table.Binary ? "binary" : "text";
            var copyOut = $"COPY (SELECT {columns} FROM {from}{where}) TO STDOUT (FORMAT {format})";
            // A table copied whole in one chunk is emptied and loaded in one transaction on green,
            // with its rows frozen as they are written: the VACUUM before AVAILABLE then has no
            // page to rewrite (hint bits, freezing). Teal's own tables keep rows green wrote.
            var freeze = superuser && chunk.Where is null && chunk.Table.Kind == 'r' && chunk.Table.Schema != TealObjects.Schema;
            var copyIn = $"COPY {chunk.Table.Qualified} ({columns}) FROM STDIN (FORMAT {format}{(freeze ? ", FREEZE" : string.Empty)})";
            try
            {
                await using var load = freeze ? await green.BeginTransactionAsync(cancellationToken) : null;
                if (load is not null)
                {
                    await green.ExecuteAsync($"TRUNCATE ONLY {chunk.Table.Qualified}", cancellationToken);
                }

                await CopyChunkAsync(blue, green, copyOut, copyIn, chunk.Table.Binary, buffer, counter, cancellationToken);
                if (load is not null)
                {
                    await load.CommitAsync(cancellationToken);
                }
            }
            catch (PostgresException ex)
            {
                throw new TealException("copy.table-failed", $"copying {chunk.Table.Display} to green failed: {ex.MessageText} ({ex.SqlState})", "check green's server log; `teal create --copy-parallelism 1` uses PostgreSQL's own copy instead");
            }

            counter.ChunkDone();
        }

        await tx.CommitAsync(cancellationToken);
    }

    private static async Task CopyChunkAsync(NpgsqlConnection blue, NpgsqlConnection green, string copyOut, string copyIn, bool binary, byte[] buffer, TableCounter counter, CancellationToken cancellationToken)
    {
        if (binary)
        {
            var rows = new BinaryRowCounter();
            await using var source = await blue.BeginRawBinaryCopyAsync(copyOut, cancellationToken);
            var target = await green.BeginRawBinaryCopyAsync(copyIn, cancellationToken);
            try
            {
                int read;
                while ((read = await source.ReadAsync(buffer, cancellationToken)) > 0)
                {
                    counter.Add(rows.Feed(buffer.AsSpan(0, read)), read);
                    await target.WriteAsync(buffer.AsMemory(0, read), cancellationToken);
                }
            }
            catch
            {
                await target.CancelAsync();
                await target.DisposeAsync();
                throw;
            }

            // Disposing ends the COPY: green commits the chunk.
            await target.DisposeAsync();
            return;
        }

        using var reader = await blue.BeginTextExportAsync(copyOut, cancellationToken);
        var writer = await green.BeginTextImportAsync(copyIn, cancellationToken);
        var chars = new char[buffer.Length / 2];
        try
        {
            int read;
            while ((read = await reader.ReadAsync(chars, cancellationToken)) > 0)
            {
                // Text COPY has one row per line: newlines inside values are escaped.
                counter.Add(chars.AsSpan(0, read).Count('\n'), read);
                await writer.WriteAsync(chars.AsMemory(0, read), cancellationToken);
            }
        }
        catch
        {
            await ((NpgsqlCopyTextWriter)writer).CancelAsync();
            await writer.DisposeAsync();
            throw;
        }

        await writer.DisposeAsync();
    }

    /// <summary>Builds what <see cref="DeferAsync"/> dropped: indexes in parallel, then the foreign keys, each forgotten once built.</summary>
    private async Task BuildDeferredAsync(int parallelism, CancellationToken cancellationToken)
    {
        List<(string Kind, string Target, string Create, string? Validate)> pending;
        await using (var green = await sessions.OpenAsync(Side.Green, cancellationToken))
        {
            pending = await green.QueryAsync(
                $"SELECT kind, target, create_sql, validate_sql FROM {StateTable} ORDER BY seq",
                r => (r.GetString(0), r.GetString(1), r.GetString(2), r.NullableString(3)),
                cancellationToken);
        }

        var indexes = new ConcurrentQueue<(string Kind, string Target, string Create, string? Validate)>(pending.Where(p => p.Kind == "index"));
        var builders = Enumerable.Range(0, Math.Min(parallelism, Math.Max(1, indexes.Count))).Select(_ => Task.Run(
            async () =>
            {
                await using var green = await OpenWorkerAsync(Side.Green, cancellationToken);
                await green.ExecuteAsync("SET maintenance_work_mem = '256MB'", cancellationToken);
                while (indexes.TryDequeue(out var item))
                {
                    await BuildAsync(green, item, cancellationToken);
                }
            },
            cancellationToken));
        await Task.WhenAll(builders);
        await using var keys = await OpenWorkerAsync(Side.Green, cancellationToken);
        foreach (var item in pending.Where(p => p.Kind == "fk"))
        {
            await BuildAsync(keys, item, cancellationToken);
        }
    }

    private async Task BuildAsync(NpgsqlConnection green, (string Kind, string Target, string Create, string? Validate) item, CancellationToken cancellationToken)
    {
        try
        {
            await green.ExecuteAsync(item.Create, cancellationToken);
            if (item.Validate is not null)
            {
                await green.ExecuteAsync(item.Validate, cancellationToken);
            }
        }
        catch (PostgresException ex)
        {
            throw new TealException("copy.rebuild-failed", $"building {(item.Kind == "fk" ? "foreign key" : "index")} {item.Target} on green after the copy failed: {ex.MessageText} ({ex.SqlState})", $"the statement was: {item.Create}");
        }

        await green.ExecuteAsync($"DELETE FROM {StateTable} WHERE kind = $1 AND target = $2", cancellationToken, item.Kind, item.Target);
    }

    private async Task<NpgsqlConnection> OpenWorkerAsync(Side side, CancellationToken cancellationToken)
    {
        var builder = PostgresConnections.Builder(sessions.Connection(side), pooling: false);
        builder.ApplicationName = SessionName;
        var conn = new NpgsqlConnection(builder.ConnectionString);
        try
        {
            await conn.OpenAsync(cancellationToken);
            return conn;
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
        {
            await conn.DisposeAsync();
            throw PostgresConnections.Classify(ex, sessions.Connection(side), LinkSessions.Role(side));
        }
    }

    /// <summary>Rows and bytes of one table, updated by every session copying a chunk of it.</summary>
    private sealed class TableCounter(string table)
    {
        private long _rows;
        private long _bytes;
        private int _chunksDone;
        private int _started;

        public string Table => table;

        public int Chunks { get; init; } = 1;

        public bool Ready { get; set; }

        public void Started() => Interlocked.Exchange(ref _started, 1);

        public void Add(long rows, long bytes)
        {
            Interlocked.Add(ref _rows, rows);
            Interlocked.Add(ref _bytes, bytes);
        }

        public void ChunkDone() => Interlocked.Increment(ref _chunksDone);

        public TableProgress Snapshot()
        {
            var state = Ready ? TableCopyState.Ready
                : Volatile.Read(ref _chunksDone) >= Chunks ? TableCopyState.Copied
                : Volatile.Read(ref _started) == 1 ? TableCopyState.Copying
                : TableCopyState.Pending;
            return new TableProgress(table, state) { Rows = Interlocked.Read(ref _rows), Bytes = Interlocked.Read(ref _bytes) };
        }
    }
}

/// <summary>
/// Rows of a binary COPY stream, read across buffer boundaries: a 19-byte header (signature,
/// flags, extension length) and its extension, then per row a 16-bit field count (-1 ends the
/// stream) and per field a 32-bit length (-1 for NULL) and that many bytes.
/// </summary>
internal sealed class BinaryRowCounter
{
    private const int HeaderLength = 19;
    private long _skip = HeaderLength - 4;
    private readonly byte[] _word = new byte[4];
    private int _wordLength;
    private int _wordNeeded = 4;
    private int _fieldsLeft;
    private bool _inHeader = true;
    private bool _done;

    public long Feed(ReadOnlySpan<byte> data)
    {
        long rows = 0;
        var at = 0;
        while (at < data.Length && !_done)
        {
            if (_skip > 0)
            {
                var n = (int)Math.Min(_skip, data.Length - at);
                _skip -= n;
                at += n;
                continue;
            }

            var take = Math.Min(_wordNeeded - _wordLength, data.Length - at);
            data.Slice(at, take).CopyTo(_word.AsSpan(_wordLength));
            _wordLength += take;
            at += take;
            if (_wordLength < _wordNeeded)
            {
                break;
            }

            var value = _wordNeeded == 2
                ? System.Buffers.Binary.BinaryPrimitives.ReadInt16BigEndian(_word)
                : System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(_word);
            _wordLength = 0;
            if (_inHeader)
            {
                // The header extension's length.
                _inHeader = false;
                _skip = value;
                _wordNeeded = 2;
            }
            else if (_fieldsLeft == 0)
            {
                // A row's field count, or -1 for the trailer.
                if (value < 0)
                {
                    _done = true;
                    break;
                }

                rows++;
                _fieldsLeft = value;
                _wordNeeded = _fieldsLeft == 0 ? 2 : 4;
            }
            else
            {
                _fieldsLeft--;
                _skip = Math.Max(0, value);
                _wordNeeded = _fieldsLeft == 0 ? 2 : 4;
            }
        }

        return rows;
    }
}
