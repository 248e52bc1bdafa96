using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Core.Guardrails;
using Teal.Postgres.Engines;

namespace Teal.Postgres.Replication;

/// <summary>
/// PRODUCT.md §4.1: every prerequisite runs and is reported, each failure naming the exact fix.
/// Reads only; changes nothing on either side.
/// </summary>
internal sealed class PrerequisiteChecks(LinkSessions sessions, PostgresEngineCatalog catalog)
{
    /// <summary>Slots and senders one deployment uses on blue: the apply stream plus table-sync workers.</summary>
    private const int SyncWorkers = 2;

    public async Task<CheckReport> RunAsync(CancellationToken cancellationToken)
    {
        var results = new List<CheckResult>();
        // As the registered users: the checks judge their privileges, and nothing exists yet
        // (Teal's own login role included, which these users create on first use).
        await using var blue = await sessions.OpenRegisteredAsync(Side.Blue, null, cancellationToken);
        await using var greenAdmin = await sessions.OpenRegisteredAsync(Side.Green, LinkSessions.MaintenanceDatabase, cancellationToken);
        var greenDatabaseExists = await greenAdmin.ScalarAsync<bool>("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", cancellationToken, sessions.Spec.Green.Database);
        await using var green = greenDatabaseExists ? await sessions.OpenRegisteredAsync(Side.Green, null, cancellationToken) : greenAdmin;

        var spec = sessions.Spec;
        results.AddRange(await BlueAsync(blue, new BlueScope(spec.Name, spec.Tables, spec.CopyRoles) { CdcSlots = spec.CdcSlots }, catalog, cancellationToken));
        results.AddRange(await GreenCapacityAsync(greenAdmin, cancellationToken));
        // Creating the subscription alone would need less (pg_create_subscription and CREATE on
        // the database from 16), but green is fenced from replication start, superusers included.
        results.Add(await PrivilegesAsync(greenAdmin, "green", "it fences green from replication start (every other role loses LOGIN, superusers included), which only a superuser can", cancellationToken));
        results.Add(await VersionAsync(blue, greenAdmin, cancellationToken));
        results.Add(greenDatabaseExists ? await GreenEmptyAsync(green, cancellationToken) : CheckResult.Pass("green.empty", $"green has no database {sessions.Spec.Green.Database} yet; Teal creates it"));
        results.Add(await ExtensionsAsync(blue, greenAdmin, cancellationToken));
        return new CheckReport(results);
    }

    /// <summary>
    /// Every check that needs blue only: run again with green's checks above, and on their own
    /// before a managed green is built (<see cref="Engines.PostgresEngine.CheckBeforeGreenAsync"/>).
    /// </summary>
    public static async Task<List<CheckResult>> BlueAsync(NpgsqlConnection blue, BlueScope scope, PostgresEngineCatalog catalog, CancellationToken cancellationToken)
    {
        var results = new List<CheckResult> { await WalLevelAsync(blue, cancellationToken) };
        results.AddRange(await BlueCapacityAsync(blue, cancellationToken));
        results.AddRange(await BluePrivilegesAsync(blue, scope, cancellationToken));
        results.Add(await ReplicaIdentityAsync(blue, scope, cancellationToken));
        results.AddRange(await NotReplicatedAsync(blue, cancellationToken));
        results.Add(await ExternalReplicationAsync(blue, scope, cancellationToken));
        if (scope.CdcSlots.Count > 0)
        {
            results.Add(await CdcSlots.CheckAtCreateAsync(blue, scope.CdcSlots, cancellationToken));
        }

        results.Add(await ClientToolsAsync(blue, scope, catalog, cancellationToken));
        return results;
    }

    /// <summary>
    /// pg_dump (and pg_dumpall, when roles are copied) refuse to dump a server newer than
    /// themselves, so tools older than blue would let Teal build a green and then fail at the
    /// schema copy. psql replays into green and works against newer servers.
    /// </summary>
    private static async Task<CheckResult> ClientToolsAsync(NpgsqlConnection blue, BlueScope scope, PostgresEngineCatalog catalog, CancellationToken cancellationToken)
    {
        var blueMajor = await MajorVersionAsync(blue, cancellationToken);
        var dumpers = scope.CopyRoles ? "pg_dump and pg_dumpall" : "pg_dump";
        var install = $"install PostgreSQL {blueMajor}'s client tools (postgresql-client-{blueMajor}) where teal serve runs";
        EngineBinaries tools;
        try
        {
            tools = await catalog.ClientToolsAsync(cancellationToken);
        }
        catch (TealException ex)
        {
            return CheckResult.Fail("teal.client-tools", $"Teal copies blue's schema with {dumpers} and psql: {ex.Message}", install);
        }

        if (scope.CopyRoles && !File.Exists(Path.Combine(tools.BinDirectory, "pg_dumpall")))
        {
            return CheckResult.Fail("teal.client-tools", $"pg_dumpall (to copy blue's roles) is missing from {tools.BinDirectory}", install);
        }

        return tools.MajorVersion >= blueMajor
            ? CheckResult.Pass("teal.client-tools", $"{dumpers} {tools.Version} can dump blue (PostgreSQL {blueMajor})")
            : CheckResult.Fail(
                "teal.client-tools",
                $"blue runs PostgreSQL {blueMajor}, but the newest {dumpers} on this machine are PostgreSQL {tools.MajorVersion}'s, which refuse to dump a newer server (Teal copies blue's schema with them)",
                install);
    }

    internal static async Task<int> MajorVersionAsync(NpgsqlConnection connection, CancellationToken cancellationToken) =>
        int.Parse((await connection.ScalarAsync<string>("SELECT current_setting('server_version_num')", cancellationToken))!, System.Globalization.CultureInfo.InvariantCulture) / 10000;

    private static async Task<CheckResult> WalLevelAsync(NpgsqlConnection blue, CancellationToken cancellationToken)
    {
        var (level, pending) = (await blue.QueryAsync(
            "SELECT setting, pending_restart FROM pg_settings WHERE name = 'wal_level'", r => (r.GetString(0), r.GetBoolean(1)), cancellationToken))[0];
        // "Set" is not "active": ALTER SYSTEM plus a reload leaves the old level running.
        if (level != "logical" && pending)
        {
            return CheckResult.Fail("blue.wal-level", $"blue's wal_level is still {level}: the change to it waits for a restart (pending_restart)", "restart blue so that wal_level = logical takes effect");
        }

        if (level != "logical")
        {
            return CheckResult.Fail("blue.wal-level", $"blue's wal_level is {level}; logical replication needs logical", "on blue: ALTER SYSTEM SET wal_level = logical; then restart blue");
        }

        return pending
            ? CheckResult.Fail("blue.wal-level", "blue's wal_level was changed but the change waits for a restart (pending_restart)", "restart blue so the new wal_level takes effect")
            : CheckResult.Pass("blue.wal-level", "wal_level is logical");
    }

    private static async Task<List<CheckResult>> BlueCapacityAsync(NpgsqlConnection blue, CancellationToken cancellationToken)
    {
        var row = (await blue.QueryAsync(
            """
            SELECT current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)::int,
                   current_setting('max_wal_senders')::int, (SELECT count(*) FROM pg_stat_replication)::int
            """,
            r => (Slots: r.GetInt32(0), UsedSlots: r.GetInt32(1), Senders: r.GetInt32(2), UsedSenders: r.GetInt32(3)),
            cancellationToken))[0];
        const int need = 1 + SyncWorkers;
        return
        [
            row.Slots - row.UsedSlots >= need
                ? CheckResult.Pass("blue.max-replication-slots", $"{row.Slots - row.UsedSlots} of {row.Slots} replication slots free")
                : CheckResult.Fail("blue.max-replication-slots", $"blue has {row.Slots - row.UsedSlots} free replication slots ({row.UsedSlots} of {row.Slots} used); Teal needs {need} (1 + {SyncWorkers} for the initial copy)", $"on blue: ALTER SYSTEM SET max_replication_slots = {row.UsedSlots + need + 2}; then restart blue"),
            row.Senders - row.UsedSenders >= need
                ? CheckResult.Pass("blue.max-wal-senders", $"{row.Senders - row.UsedSenders} of {row.Senders} WAL senders free")
                : CheckResult.Fail("blue.max-wal-senders", $"blue has {row.Senders - row.UsedSenders} free WAL senders ({row.UsedSenders} of {row.Senders} used); Teal needs {need}", $"on blue: ALTER SYSTEM SET max_wal_senders = {row.UsedSenders + need + 2}; then restart blue"),
        ];
    }

    private static async Task<List<CheckResult>> GreenCapacityAsync(NpgsqlConnection green, CancellationToken cancellationToken)
    {
        var row = (await green.QueryAsync(
            """
            SELECT current_setting('max_logical_replication_workers')::int, current_setting('max_worker_processes')::int,
                   current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_subscription)::int
            """,
            r => (Workers: r.GetInt32(0), Processes: r.GetInt32(1), Origins: r.GetInt32(2), Subscriptions: r.GetInt32(3)),
            cancellationToken))[0];
        var needWorkers = (row.Subscriptions + 1) * (1 + SyncWorkers);
        return
        [
            row.Workers >= needWorkers
                ? CheckResult.Pass("green.max-logical-replication-workers", $"max_logical_replication_workers is {row.Workers}")
                : CheckResult.Fail("green.max-logical-replication-workers", $"green's max_logical_replication_workers is {row.Workers}; {row.Subscriptions + 1} subscription(s) need {needWorkers} (apply + {SyncWorkers} copy workers each)", $"on green: ALTER SYSTEM SET max_logical_replication_workers = {needWorkers}; then restart green"),
            // Logical replication workers are background workers: they come out of max_worker_processes.
            row.Processes > row.Workers
                ? CheckResult.Pass("green.max-worker-processes", $"max_worker_processes is {row.Processes}")
                : CheckResult.Fail("green.max-worker-processes", $"green's max_worker_processes ({row.Processes}) leaves no room beyond max_logical_replication_workers ({row.Workers})", $"on green: ALTER SYSTEM SET max_worker_processes = {row.Workers + 4}; then restart green"),
            // A subscriber tracks its progress in a replication origin, limited by max_replication_slots (before 18).
            row.Origins > row.Subscriptions
                ? CheckResult.Pass("green.max-replication-slots", $"max_replication_slots is {row.Origins} (replication origins)")
                : CheckResult.Fail("green.max-replication-slots", $"green's max_replication_slots ({row.Origins}) leaves no replication origin for a new subscription", $"on green: ALTER SYSTEM SET max_replication_slots = {row.Subscriptions + 4}; then restart green"),
        ];
    }

    private static async Task<CheckResult> PrivilegesAsync(NpgsqlConnection conn, string side, string why, CancellationToken cancellationToken)
    {
        var (user, super, replication) = (await conn.QueryAsync(
            "SELECT rolname::text, rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user",
            r => (r.GetString(0), r.GetBoolean(1), r.GetBoolean(2)),
            cancellationToken))[0];
        if (super)
        {
            return CheckResult.Pass($"{side}.privileges", $"{user} is a superuser");
        }

        var has = replication ? "has REPLICATION but is not a superuser" : "is neither a superuser nor has REPLICATION";
        return CheckResult.Fail($"{side}.privileges", $"{side}'s user {user} {has}; Teal needs a superuser there because {why}", $"connect as a superuser, or on {side}: ALTER ROLE {Sql.Ident(user)} SUPERUSER");
    }

    /// <summary>Tables a publication lists when Teal's role on blue is no superuser (FOR ALL TABLES needs one): top-level tables outside the system schemas, Teal's and extensions'.</summary>
    internal const string PublishedTables = """
        c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relpersistence = 'p'
        AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'teal') AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
        """;

    /// <summary>
    /// Blue without a superuser (hosted PostgreSQL, or an operator who gives Teal no more than it
    /// needs): create, replication and verify need Teal's own role <c>teal_control</c> made by
    /// the operator with REPLICATION (walsender, slot), CREATE on the database (Teal's schema),
    /// SELECT on every table (the copy and verify read them: pg_read_all_data from 14) and the
    /// privileges of each table's owner (a publication lists only tables its creator owns).
    /// Each one missing is named with the statement that grants it. What still needs a
    /// superuser is a warning here and a refusal at switchover: event triggers (DDL capture) and
    /// the hard fence, which takes LOGIN from superusers and ends their sessions.
    /// </summary>
    private static async Task<List<CheckResult>> BluePrivilegesAsync(NpgsqlConnection blue, BlueScope scope, CancellationToken cancellationToken)
    {
        var (user, super, replication, create, database, readAll) = (await blue.QueryAsync(
            """
            SELECT rolname::text, rolsuper, rolreplication, has_database_privilege(current_database(), 'CREATE'), current_database()::text,
                   to_regrole('pg_read_all_data') IS NOT NULL
            FROM pg_roles WHERE rolname = current_user
            """,
            r => (r.GetString(0), r.GetBoolean(1), r.GetBoolean(2), r.GetBoolean(3), r.GetString(4), r.GetBoolean(5)),
            cancellationToken))[0];
        if (super)
        {
            return [CheckResult.Pass("blue.privileges", $"{user} is a superuser")];
        }

        var role = Sql.Ident(user);
        var missing = new List<(string What, string Fix)>();
        if (user != LinkSessions.ControlRole)
        {
            missing.Add(($"Teal's own login: without a superuser on blue, Teal cannot create its role {LinkSessions.ControlRole}, so blue must be registered as that role, made by you", $"CREATE ROLE {LinkSessions.ControlRole} LOGIN PASSWORD '…' with the grants below, and register blue with user {LinkSessions.ControlRole}"));
        }

        if (!replication)
        {
            missing.Add(("REPLICATION (the subscription's slot and walsender)", $"ALTER ROLE {role} REPLICATION"));
        }

        if (!create)
        {
            missing.Add(($"CREATE on database {database} (Teal's schema teal: heartbeat and DDL log)", $"GRANT CREATE ON DATABASE {Sql.Ident(database)} TO {role}"));
        }

        var tables = (await blue.QueryAsync(
            $"""
            SELECT n.nspname::text, c.relname::text, has_table_privilege(c.oid, 'SELECT'), pg_has_role(c.relowner, 'USAGE'), pg_get_userbyid(c.relowner)::text
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE {PublishedTables}
            ORDER BY 1, 2
            """,
            r => (Schema: r.GetString(0), Table: r.GetString(1), Readable: r.GetBoolean(2), Owned: r.GetBoolean(3), Owner: r.GetString(4)),
            cancellationToken)).Where(t => scope.InScope(t.Schema, t.Table)).ToList();
        var unreadable = tables.Where(t => !t.Readable).ToList();
        if (unreadable.Count > 0)
        {
            var fix = readAll
                ? $"GRANT pg_read_all_data TO {role}"
                : string.Join("; ", unreadable.Select(t => t.Schema).Distinct().Select(s => $"GRANT SELECT ON ALL TABLES IN SCHEMA {Sql.Ident(s)} TO {role}"));
            missing.Add(($"SELECT on {unreadable.Count} table(s) (the initial copy and verify read them): {Names(unreadable.Select(t => Sql.Display(t.Schema, t.Table)))}", fix));
        }

        var unowned = tables.Where(t => !t.Owned).ToList();
        if (unowned.Count > 0)
        {
            missing.Add((
                $"ownership of {unowned.Count} table(s) (a publication lists only tables its creator owns; FOR ALL TABLES needs a superuser): {Names(unowned.Select(t => Sql.Display(t.Schema, t.Table)))}",
                string.Join("; ", unowned.Select(t => t.Owner).Distinct().Select(o => $"GRANT {Sql.Ident(o)} TO {role}"))));
        }

        if (scope.CopyRoles)
        {
            missing.Add(("a superuser to copy blue's roles (pg_dumpall reads pg_authid)", "leave role copy off and create the roles on green yourself"));
        }

        if (missing.Count > 0)
        {
            return
            [
                CheckResult.Fail(
                    "blue.privileges",
                    $"blue's user {user} is not a superuser and lacks: {string.Join("; ", missing.Select(m => m.What))}",
                    $"on blue, as a superuser: {string.Join("; ", missing.Select(m => m.Fix))}"),
            ];
        }

        return
        [
            CheckResult.Pass("blue.privileges", $"{user} is not a superuser but has what create, replication and verify need: REPLICATION, CREATE on {database}, SELECT on and the owner's privileges over every replicated table"),
            CheckResult.Warn(
                "blue.superuser",
                $"without a superuser on blue, DDL on blue is not recorded (event triggers need one: a schema change shows as green's apply error), the publication lists blue's tables (a new table joins it with `teal add-tables`), and the switchover refuses: its fence takes LOGIN from every role, superusers included, and ends their sessions",
                $"before the switchover, on blue as a superuser: ALTER ROLE {role} SUPERUSER (and NOSUPERUSER after it, if you like)"),
        ];
    }

    private static string Names(IEnumerable<string> names)
    {
        var list = names.ToList();
        return string.Join(", ", list.Take(10)) + (list.Count > 10 ? $" and {list.Count - 10} more" : string.Empty);
    }

    /// <summary>Leaf tables (partitions included, partitioned parents excluded) that cannot replicate UPDATE/DELETE.</summary>
    private static async Task<CheckResult> ReplicaIdentityAsync(NpgsqlConnection blue, BlueScope scope, CancellationToken cancellationToken)
    {
        var offenders = await blue.QueryAsync(
            """
            SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND c.relpersistence = 'p'
              AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'teal') AND n.nspname NOT LIKE 'pg\_toast%'
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
              AND (c.relreplident = 'n'
                   OR (c.relreplident = 'd' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
                   OR (c.relreplident = 'i' AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
            ORDER BY 1, 2
            """,
            r => (Schema: r.GetString(0), Table: r.GetString(1)),
            cancellationToken);
        offenders = offenders.Where(t => scope.InScope(t.Schema, t.Table)).ToList();
        if (offenders.Count == 0)
        {
            return CheckResult.Pass("blue.replica-identity", "every table has a primary key or a replica identity");
        }

        var names = string.Join(", ", offenders.Select(t => Sql.Display(t.Schema, t.Table)));
        var fixes = string.Join(" ", offenders.Select(t => $"ALTER TABLE {Sql.Qualified(t.Schema, t.Table)} REPLICA IDENTITY FULL;"));
        return CheckResult.Fail(
            "blue.replica-identity",
            $"{offenders.Count} table(s) have no primary key or replica identity, so their UPDATEs and DELETEs cannot replicate: {names}",
            $"add a primary key to each, or on blue: {fixes}");
    }

    /// <summary>
    /// What exists on blue but logical replication does not carry: warnings with the fix, not
    /// refusals. Unlogged tables (no WAL, so nothing to decode), large objects (pg_largeobject
    /// is a system catalog, never published), sequences belonging to no column (no sequence is
    /// replicated; Teal sets every one at switchover, but an owned one is at least tied to the
    /// table it numbers) and materialized views (contents are not replicated; Teal refreshes
    /// them on green).
    /// </summary>
    private static async Task<List<CheckResult>> NotReplicatedAsync(NpgsqlConnection blue, CancellationToken cancellationToken)
    {
        var unlogged = await blue.QueryAsync(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'u' ORDER BY 1",
            r => r.GetString(0),
            cancellationToken);
        var largeObjects = await blue.ScalarAsync<long>("SELECT count(*) FROM pg_largeobject_metadata", cancellationToken);
        var unowned = await blue.QueryAsync(
            """
            SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'teal')
              AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                              AND (d.deptype = 'e' OR (d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))))
            ORDER BY 1
            """,
            r => r.GetString(0),
            cancellationToken);
        var views = await blue.QueryAsync(
            "SELECT schemaname || '.' || matviewname FROM pg_matviews WHERE ispopulated AND schemaname <> 'teal' ORDER BY 1",
            r => r.GetString(0),
            cancellationToken);
        return
        [
            unlogged.Count == 0
                ? CheckResult.Pass("blue.unlogged-tables", "no unlogged tables")
                : CheckResult.Warn("blue.unlogged-tables", $"unlogged tables write no WAL, so logical replication cannot carry them; green gets them empty: {string.Join(", ", unlogged)}", $"if their rows matter, on blue: {string.Join(" ", unlogged.Select(u => $"ALTER TABLE {Sql.QualifiedFromDisplay(u)} SET LOGGED;"))}"),
            largeObjects == 0
                ? CheckResult.Pass("blue.large-objects", "no large objects")
                : CheckResult.Warn("blue.large-objects", $"blue holds {largeObjects} large object(s); logical replication does not carry them (green would have none)", "move them into bytea columns before the switchover, or copy them to green right after it from the fenced old blue: pg_dump -Fc --blobs, then pg_restore --data-only -L with only the BLOB entries of pg_restore -l"),
            unowned.Count == 0
                ? CheckResult.Pass("blue.sequences", "every sequence belongs to a column; Teal sets them all on green at switchover")
                : CheckResult.Warn("blue.sequences", $"logical replication carries no sequence; {unowned.Count} belong to no column: {string.Join(", ", unowned.Take(10))}{(unowned.Count > 10 ? ", …" : string.Empty)}. Teal sets every sequence on green at switchover (sync-sequences), these included, but nothing else keeps them", $"nothing to do unless your application sets them another way; to tie one to the column it numbers, on blue: ALTER SEQUENCE {Sql.QualifiedFromDisplay(unowned[0])} OWNED BY table.column;"),
            views.Count == 0
                ? CheckResult.Pass("blue.materialized-views", "no populated materialized views")
                : CheckResult.Warn("blue.materialized-views", $"logical replication carries no materialized view contents: {string.Join(", ", views.Take(10))}{(views.Count > 10 ? ", …" : string.Empty)} arrive empty on green", "nothing to do: Teal refreshes them on green before the deployment is AVAILABLE and again at switchover"),
        ];
    }

    /// <summary>
    /// Publications, logical slots or subscriptions that are not Teal's: blue already feeds (or
    /// follows) someone. Other Teal deployments (teal_*) of the same server are fine.
    /// </summary>
    private static async Task<CheckResult> ExternalReplicationAsync(NpgsqlConnection blue, BlueScope scope, CancellationToken cancellationToken)
    {
        var name = scope.Name;
        var found = new List<string>();
        // Slots named with --cdc-slot, and the publications their consumers read, are carried to green.
        if (scope.CdcSlots.Count == 0)
        {
            found.AddRange((await blue.QueryAsync("SELECT pubname::text FROM pg_publication WHERE pubname <> $1 AND pubname NOT LIKE 'teal\\_%'", r => r.GetString(0), cancellationToken, name)).Select(p => $"publication {p}"));
        }

        found.AddRange((await blue.QueryAsync(
            "SELECT slot_name::text FROM pg_replication_slots WHERE slot_type = 'logical' AND slot_name <> $1 AND slot_name NOT LIKE 'pg\\_%\\_sync\\_%' AND slot_name NOT LIKE 'teal\\_%' AND slot_name <> ALL($2)",
            r => r.GetString(0),
            cancellationToken,
            name,
            scope.CdcSlots.ToArray())).Select(s => $"logical slot {s}"));
        found.AddRange((await blue.QueryAsync("SELECT subname::text FROM pg_subscription", r => r.GetString(0), cancellationToken)).Select(s => $"subscription {s}"));
        return found.Count == 0
            ? CheckResult.Pass("blue.external-replication", "blue has no other publication, logical slot or subscription")
            : CheckResult.Fail(
                "blue.external-replication",
                $"blue already takes part in logical replication Teal does not manage: {string.Join(", ", found)}",
                "drop what is no longer used (DROP PUBLICATION …, SELECT pg_drop_replication_slot('…'), DROP SUBSCRIPTION …) or move it off blue first");
    }

    private static async Task<CheckResult> VersionAsync(NpgsqlConnection blue, NpgsqlConnection green, CancellationToken cancellationToken)
    {
        var b = await blue.ScalarAsync<string>("SELECT current_setting('server_version_num')", cancellationToken);
        var g = await green.ScalarAsync<string>("SELECT current_setting('server_version_num')", cancellationToken);
        var bv = int.Parse(b!, System.Globalization.CultureInfo.InvariantCulture);
        var gv = int.Parse(g!, System.Globalization.CultureInfo.InvariantCulture);
        return gv >= bv
            ? CheckResult.Pass("green.version", $"green runs PostgreSQL {gv / 10000}.{gv % 10000}, blue {bv / 10000}.{bv % 10000}")
            : CheckResult.Fail("green.version", $"green runs PostgreSQL {gv / 10000}.{gv % 10000}, older than blue's {bv / 10000}.{bv % 10000}", "green must run the same or a newer version: pick a newer --target-engine-version");
    }

    private async Task<CheckResult> GreenEmptyAsync(NpgsqlConnection green, CancellationToken cancellationToken)
    {
        var relations = await green.QueryAsync(
            """
            SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
              AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'teal') AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
            ORDER BY 1 LIMIT 6
            """,
            r => r.GetString(0),
            cancellationToken);
        if (relations.Count == 0)
        {
            return CheckResult.Pass("green.empty", $"green's database {sessions.Spec.Green.Database} is empty");
        }

        var shown = string.Join(", ", relations.Take(5)) + (relations.Count > 5 ? ", …" : string.Empty);
        return CheckResult.Fail(
            "green.empty",
            $"green's database {sessions.Spec.Green.Database} is not empty ({shown}); Teal copies blue's schema into an empty database",
            $"point --target-connection at an empty server, or on green: DROP DATABASE {Sql.Ident(sessions.Spec.Green.Database)}");
    }

    /// <summary>
    /// Every extension blue uses must be installable on green's server. The schema copy creates
    /// each at green's default version: one whose version blue runs is not offered there is
    /// a warning (its functions may differ), with the update to run after the switchover.
    /// </summary>
    private static async Task<CheckResult> ExtensionsAsync(NpgsqlConnection blue, NpgsqlConnection green, CancellationToken cancellationToken)
    {
        var used = await blue.QueryAsync("SELECT extname::text, extversion::text FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1", r => (Name: r.GetString(0), Version: r.GetString(1)), cancellationToken);
        var available = (await green.QueryAsync("SELECT name::text, version::text FROM pg_available_extension_versions", r => (Name: r.GetString(0), Version: r.GetString(1)), cancellationToken))
            .GroupBy(e => e.Name)
            .ToDictionary(g => g.Key, g => g.Select(e => e.Version).ToHashSet());
        var defaults = (await green.QueryAsync("SELECT name::text, coalesce(default_version, '')::text FROM pg_available_extensions", r => (r.GetString(0), r.GetString(1)), cancellationToken)).ToDictionary(e => e.Item1, e => e.Item2);
        var missing = used.Where(e => !available.ContainsKey(e.Name)).Select(e => e.Name).ToList();
        if (missing.Count > 0)
        {
            return CheckResult.Fail("green.extensions", $"extensions blue uses are not installed on green's server: {string.Join(", ", missing)}", $"install their packages for green's PostgreSQL version on green's machine (e.g. postgresql-<version>-{missing[0]})");
        }

        var otherVersion = used.Where(e => !available[e.Name].Contains(e.Version)).ToList();
        if (otherVersion.Count > 0)
        {
            var names = string.Join(", ", otherVersion.Select(e => $"{e.Name} {e.Version} (green offers {defaults.GetValueOrDefault(e.Name, "?")})"));
            return CheckResult.Warn("green.extensions", $"green's server does not offer the version blue runs of: {names}; green gets its default version", $"check that the application works with it on green before the switchover; to match, install that version on green, or after the switchover run ALTER EXTENSION {Sql.Ident(otherVersion[0].Name)} UPDATE on green");
        }

        return CheckResult.Pass("green.extensions", used.Count == 0 ? "blue uses no extensions" : $"green offers every extension blue uses, at blue's version ({string.Join(", ", used.Select(e => $"{e.Name} {e.Version}"))})");
    }
}

/// <summary>What blue's checks need to know of the deployment: its object stem, its tables, whether roles are copied.</summary>
internal sealed record BlueScope(string Name, IReadOnlyList<string> Tables, bool CopyRoles)
{
    /// <summary>Logical slots on blue that CDC consumers read (<c>--cdc-slot</c>): Teal carries them to green.</summary>
    public IReadOnlyList<string> CdcSlots { get; init; } = [];

    public bool InScope(string schema, string table) =>
        Tables.Count == 0 || Tables.Contains(Sql.Display(schema, table)) || (schema == "public" && Tables.Contains(table));
}
