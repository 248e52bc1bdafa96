using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Postgres.Connections;

namespace Teal.Postgres.Replication;

/// <summary>
/// Publication on blue, subscription on green, and taking them down again. Each step looks
/// before it acts, so every operation can be repeated after a crash.
/// </summary>
internal sealed class ReplicationSetup(LinkSessions sessions, Fencing fencing, SchemaCopy schema, SchemaDrift drift, DdlLog ddl) : IAsyncDisposable
{
    private int _adopted;
    private readonly ParallelCopy _copy = new(sessions);
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _gate = new();
    private Task? _copying;

    private string Name => sessions.Spec.Name;

    /// <summary>
    /// Makes the subscription log in the way this link expects, once per link (the monitor's
    /// first status read does it). A deployment created before Teal had its own login has a
    /// subscription owned by green's registered user and connecting to blue as blue's: the fence
    /// takes LOGIN from both, and the apply worker and the walsender check it whenever they
    /// (re)start. And after Teal's login on blue got a new password (<c>teal instance
    /// rotate-password</c>, or a lost secrets file that made Teal re-key it), the conninfo still
    /// holds the old one: the running walsender keeps its session, but the next reconnect would
    /// fail. A conninfo that differs from the expected one is replaced (the worker restarts).
    /// </summary>
    public async Task AdoptControlRoleAsync(CancellationToken cancellationToken)
    {
        if (Volatile.Read(ref _adopted) == 1)
        {
            return;
        }

        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var subscription = await green.QueryAsync(
            "SELECT pg_get_userbyid(subowner)::text, subconninfo FROM pg_subscription WHERE subname = $1",
            r => (Owner: r.GetString(0), Conninfo: r.GetString(1)),
            cancellationToken,
            Name);
        if (subscription.Count == 1)
        {
            var expected = Libpq.Conninfo(BlueConninfo());
            var owner = subscription[0].Owner;
            if (owner != LinkSessions.ControlRole || subscription[0].Conninfo != expected)
            {
                // The statement holds the password: keep it out of green's server log.
                await green.ExecuteAsync("SET log_statement = 'none'; SET log_min_error_statement = 'panic'", cancellationToken);
                try
                {
                    await green.ExecuteAsync($"ALTER SUBSCRIPTION {Sql.Ident(Name)} CONNECTION {Sql.Literal(expected)}", cancellationToken);
                    if (owner != LinkSessions.ControlRole)
                    {
                        await green.ExecuteAsync($"ALTER SUBSCRIPTION {Sql.Ident(Name)} OWNER TO {LinkSessions.ControlRole}", cancellationToken);
                    }
                }
                catch (PostgresException ex)
                {
                    // Npgsql keeps the statement (with blue's password) on the exception: rethrow without it.
                    throw new TealException("replication.subscription-connection-failed", $"updating the subscription's connection on {sessions.Spec.Name} failed: {ex.MessageText} ({ex.SqlState})", "check Teal's login on both sides (`teal check`)");
                }
                finally
                {
                    await green.ExecuteAsync("RESET log_statement; RESET log_min_error_statement", cancellationToken);
                }
            }
        }

        Volatile.Write(ref _adopted, 1);
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await using (var blue = await sessions.OpenAsync(Side.Blue, cancellationToken))
        {
            await TealObjects.InstallTablesAsync(blue, cancellationToken);
            await blue.ExecuteAsync(
                "INSERT INTO teal.heartbeat (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", cancellationToken, Name);
            var super = await LinkSessions.IsSuperuserAsync(blue, cancellationToken);
            if (super)
            {
                // Event triggers need a superuser; without one DDL on blue goes unrecorded (the
                // prerequisites warned), and a stall shows green's own error instead.
                await TealObjects.InstallDdlCaptureAsync(blue, Name, cancellationToken);
            }

            await CreatePublicationAsync(blue, super, cancellationToken);
        }

        var parallel = false;
        await using (var green = await sessions.OpenAsync(Side.Green, cancellationToken))
        {
            // The subscriber needs every published table, Teal's included.
            await TealObjects.InstallTablesAsync(green, cancellationToken);
            if (await SubscriptionExistsAsync(green, cancellationToken))
            {
                // Teal restarted after a parallel copy made its subscription: nothing is left to build.
                await _copy.ForgetAsync(green, cancellationToken);
                _copy.MarkReady();
            }
            else if (sessions.Spec.CopyParallelism > 1 && !sessions.Spec.Reversed)
            {
                parallel = true;
            }
            else
            {
                await CreateSubscriptionAsync(green, copyData: true, cancellationToken);
            }
        }

        await fencing.FenceAsync(Side.Green, cancellationToken);
        // Green takes no client's writes until the switchover: no client session stays on it.
        await fencing.DrainAsync(Side.Green, TimeSpan.Zero, cancellationToken);
        if (parallel)
        {
            lock (_gate)
            {
                // In the background, so COPY_DATA reports per-table progress while it runs.
                _copying ??= Task.Run(() => CopyInParallelAsync(_stopping.Token), CancellationToken.None);
            }
        }
    }

    /// <summary>Why the parallel copy failed, or null.</summary>
    public string? CopyFailure => _copying is { IsFaulted: true } t ? (t.Exception!.InnerException as TealException)?.Message ?? t.Exception!.InnerException!.Message : null;

    /// <summary>Whether the parallel copy is still running (the subscription is made at its end).</summary>
    public bool Copying => _copying is { IsCompleted: false };

    /// <summary>Per-table progress of the parallel copy (empty with the subscription's own copy).</summary>
    public IReadOnlyList<Teal.Core.Deployments.TableProgress> CopyProgress => _copy.Progress;

    /// <summary>
    /// The parallel copy, then the subscription on the slot it made (copy_data = false: the rows
    /// are on green, and the slot holds every change since the copy's snapshot).
    /// </summary>
    private async Task CopyInParallelAsync(CancellationToken cancellationToken)
    {
        await _copy.RunAsync(DropSlotAsync, cancellationToken);
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        if (!await SubscriptionExistsAsync(green, cancellationToken))
        {
            await CreateSubscriptionAsync(green, copyData: false, cancellationToken);
        }

        await _copy.ForgetAsync(green, cancellationToken);
        _copy.MarkReady();
    }

    /// <summary>Ends a parallel copy still running (before the link is disposed or its objects removed).</summary>
    public async Task StopCopyAsync()
    {
        await _stopping.CancelAsync();
        if (_copying is { } copying)
        {
            try
            {
                await copying;
            }
            catch (Exception)
            {
                // Whatever it failed with is reported by the status (CopyFailure); what it left is
                // what a remove cleans up. Stopping must not fail because the copy did.
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopCopyAsync();
        _stopping.Dispose();
    }

    /// <summary>
    /// The subscription: with copy_data and a new slot (PostgreSQL's own copy), or on the slot
    /// a parallel copy made, without copying.
    /// </summary>
    private async Task CreateSubscriptionAsync(NpgsqlConnection green, bool copyData, CancellationToken cancellationToken)
    {
        // The statement holds blue's password: keep it out of green's server log, whatever
        // log_statement says and also when it fails (log_min_error_statement).
        await green.ExecuteAsync("SET log_statement = 'none'; SET log_min_error_statement = 'panic'", cancellationToken);
        try
        {
            // CREATE SUBSCRIPTION with a slot may not run in a transaction block: one statement.
            var conninfo = Libpq.Conninfo(BlueConninfo());
            var options = copyData
                ? $"create_slot = true, slot_name = {Sql.Literal(Name)}, copy_data = true"
                : $"create_slot = false, slot_name = {Sql.Literal(Name)}, copy_data = false";
            await green.ExecuteAsync(
                $"CREATE SUBSCRIPTION {Sql.Ident(Name)} CONNECTION {Sql.Literal(conninfo)} PUBLICATION {Sql.Ident(Name)} WITH ({options})",
                cancellationToken);
        }
        catch (PostgresException ex)
        {
            // Npgsql keeps the statement on the exception: rethrow without it.
            throw new TealException(
                "replication.subscription-failed",
                $"creating the subscription on green failed: {ex.MessageText} ({ex.SqlState})",
                "green must reach blue at the address Teal uses for blue, and blue's pg_hba.conf must allow replication connections from green");
        }
        finally
        {
            await green.ExecuteAsync("RESET log_statement; RESET log_min_error_statement", cancellationToken);
        }
    }

    /// <summary>
    /// FOR ALL TABLES (or the deployment's table list plus Teal's heartbeat and DDL log),
    /// publishing partitioned tables through their root so green may partition differently.
    /// FOR ALL TABLES needs a superuser: without one, every table of blue's database is listed
    /// (the role owns them, the prerequisites checked), and tables created later are not in the
    /// publication until `teal add-tables` lists them.
    /// </summary>
    internal async Task CreatePublicationAsync(NpgsqlConnection blue, bool superuser, CancellationToken cancellationToken)
    {
        if (await blue.ScalarAsync<bool>("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)", cancellationToken, Name))
        {
            return;
        }

        var tables = sessions.Spec.Tables.Select(Sql.QualifiedFromDisplay).ToList();
        if (tables.Count == 0 && !superuser)
        {
            tables = await blue.QueryAsync($"SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {PrerequisiteChecks.PublishedTables} ORDER BY 1", r => r.GetString(0), cancellationToken);
        }

        var target = tables.Count == 0 && superuser
            ? "FOR ALL TABLES"
            : "FOR TABLE " + string.Join(", ", tables.Append("teal.heartbeat").Append("teal.ddl_log"));
        await blue.ExecuteAsync($"CREATE PUBLICATION {Sql.Ident(Name)} {target} WITH (publish_via_partition_root = true)", cancellationToken);
    }

    private IEnumerable<KeyValuePair<string, string?>> BlueConninfo()
    {
        // Teal's own role: the walsender on blue must still log in while blue is fenced.
        var blue = sessions.Connection(Side.Blue);
        yield return new("host", blue.Host);
        yield return new("port", blue.Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        yield return new("user", blue.User);
        yield return new("password", blue.Password);
        yield return new("dbname", blue.Database);
        if (blue.Options.TryGetValue("SSL Mode", out var ssl))
        {
            yield return new("sslmode", ssl.ToLowerInvariant() switch { "verifyfull" => "verify-full", "verifyca" => "verify-ca", var s => s });
        }
    }

    internal async Task<bool> SubscriptionExistsAsync(NpgsqlConnection green, CancellationToken cancellationToken) =>
        await green.ScalarAsync<bool>("SELECT EXISTS (SELECT 1 FROM pg_subscription WHERE subname = $1)", cancellationToken, Name);

    /// <summary>Drops the subscription (and with it blue's slot) and the publication, and opens green.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await using (var green = await sessions.OpenAsync(Side.Green, cancellationToken))
        {
            await DropSubscriptionAsync(green, blueReachable: true, cancellationToken);
        }

        await using (var blue = await sessions.OpenAsync(Side.Blue, cancellationToken))
        {
            await blue.ExecuteAsync($"DROP PUBLICATION IF EXISTS {Sql.Ident(Name)}", cancellationToken);
            await DropSlotAsync(blue, cancellationToken);
        }

        await fencing.UnfenceAsync(Side.Green, cancellationToken);
    }

    /// <summary>
    /// Removes everything of this deployment: subscription, publication, slot, DDL capture,
    /// heartbeat, and the fence on green. Works with blue unreachable (the slot is then
    /// detached from the subscription, and must be dropped on blue later: a second call does it).
    /// </summary>
    public async Task RemoveAsync(CancellationToken cancellationToken)
    {
        await StopCopyAsync();
        await using var blue = await TryOpenAsync(Side.Blue, cancellationToken);
        Exception? greenFailure = null;
        try
        {
            await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
            await DropSubscriptionAsync(green, blue is not null, cancellationToken);
            // Replication back to blue prepared by a switchover that rolled back while green was unreachable.
            await green.ExecuteAsync($"DROP PUBLICATION IF EXISTS {Sql.Ident(Name)}", cancellationToken);
            await DropSlotAsync(green, cancellationToken);
            await _copy.ForgetAsync(green, cancellationToken);
            await TealObjects.RemoveAsync(green, Name, cancellationToken);
            await fencing.UnfenceAsync(Side.Green, cancellationToken);
        }
        catch (Exception ex) when (IsUnreachable(ex))
        {
            // Green is gone (e.g. its managed server was removed): blue still gets cleaned up.
            greenFailure = ex;
        }

        if (blue is null)
        {
            var green = greenFailure is null ? "green was cleaned up" : "green was unreachable too";
            throw new TealException("replication.blue-unreachable", $"blue is unreachable: its publication, slot and Teal objects could not be removed ({green})", "the slot retains WAL on blue: run the delete again once blue is back");
        }

        await blue.ExecuteAsync($"DROP PUBLICATION IF EXISTS {Sql.Ident(Name)}", cancellationToken);
        await DropSlotAsync(blue, cancellationToken);
        await TealObjects.RemoveAsync(blue, Name, cancellationToken);
        if (greenFailure is TealException { Code: not ("connection.unreachable" or "connection.database-not-found") })
        {
            throw greenFailure;
        }
    }

    /// <summary>
    /// Opens a side and proves it answers. A pooled connection may have died with a server
    /// restart: one retry after clearing the pool tells "was restarted" from "is down".
    /// </summary>
    private async Task<NpgsqlConnection?> TryOpenAsync(Side side, CancellationToken cancellationToken)
    {
        for (var attempt = 0; attempt < 2; attempt++)
        {
            NpgsqlConnection? conn = null;
            try
            {
                conn = await sessions.OpenAsync(side, cancellationToken);
                await conn.ExecuteAsync("SELECT 1", cancellationToken);
                return conn;
            }
            catch (Exception ex) when (IsUnreachable(ex))
            {
                if (conn is not null)
                {
                    NpgsqlConnection.ClearPool(conn);
                    await conn.DisposeAsync();
                }
            }
        }

        return null;
    }

    private static bool IsUnreachable(Exception ex) =>
        ex is TealException { Kind: TealErrorKind.Unavailable } or TealException { Code: "connection.database-not-found" }
        || (ex is NpgsqlException && ex is not PostgresException)
        || ex is PostgresException { SqlState: PostgresErrorCodes.AdminShutdown or PostgresErrorCodes.CrashShutdown or PostgresErrorCodes.CannotConnectNow };

    internal async Task DropSubscriptionAsync(NpgsqlConnection green, bool blueReachable, CancellationToken cancellationToken)
    {
        if (!await SubscriptionExistsAsync(green, cancellationToken))
        {
            return;
        }

        var sub = Sql.Ident(Name);
        await green.ExecuteAsync($"ALTER SUBSCRIPTION {sub} DISABLE", cancellationToken);
        if (!blueReachable)
        {
            // DROP SUBSCRIPTION would try to drop the slot on blue and fail; detach it instead.
            await green.ExecuteAsync($"ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)", cancellationToken);
        }

        await green.ExecuteAsync($"DROP SUBSCRIPTION {sub}", cancellationToken);
    }

    /// <summary>Drops the slot if the subscription did not (detached, or blue was away); ends its walsender first.</summary>
    internal async Task DropSlotAsync(NpgsqlConnection blue, CancellationToken cancellationToken)
    {
        for (var attempt = 0; attempt < 50; attempt++)
        {
            var active = await blue.ScalarAsync<int?>("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1", cancellationToken, Name);
            var exists = await blue.ScalarAsync<bool>("SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", cancellationToken, Name);
            if (!exists)
            {
                return;
            }

            if (active is { } pid)
            {
                await blue.ExecuteAsync("SELECT pg_terminate_backend($1)", cancellationToken, pid);
                await Task.Delay(20, cancellationToken);
                continue;
            }

            try
            {
                await blue.ExecuteAsync("SELECT pg_drop_replication_slot($1)", cancellationToken, Name);
                return;
            }
            catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.ObjectInUse or PostgresErrorCodes.UndefinedObject)
            {
                await Task.Delay(20, cancellationToken);
            }
        }

        throw new TealException("replication.slot-busy", $"blue's replication slot {Name} stays in use", $"stop whatever streams from it, then SELECT pg_drop_replication_slot('{Name}') on blue");
    }

    public async Task AcknowledgeDdlAsync(long upToId, CancellationToken cancellationToken)
    {
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        await blue.ExecuteAsync("UPDATE teal.ddl_log SET acknowledged = true WHERE deployment = $1 AND id <= $2 AND NOT acknowledged", cancellationToken, Name, upToId);
    }

    /// <summary>
    /// The one-command fix for what logical replication needs on green after DDL on blue:
    /// schemas, tables, partitions and columns blue has and green lacks are built on green from
    /// blue's catalogs; tables the subscription skips are put in the publication if it lists
    /// tables, and the subscription is refreshed with copy_data so their rows are copied; the
    /// recorded DDL whose effect green now has is acknowledged. Returns what was added.
    /// </summary>
    public async Task<IReadOnlyList<string>> AddMissingTablesAsync(CancellationToken cancellationToken)
    {
        var added = await drift.FixAsync(cancellationToken);
        var missing = await SkippedTablesAsync(repairPublication: true, cancellationToken);
        if (missing.Count > 0)
        {
            await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
            var absent = new List<(string, string)>();
            foreach (var (schemaName, table) in missing)
            {
                if (await green.ScalarAsync<string>("SELECT to_regclass($1)::text", cancellationToken, Sql.Qualified(schemaName, table)) is null)
                {
                    absent.Add((schemaName, table));
                }
            }

            await schema.CopyTablesAsync(absent, cancellationToken);
            await green.ExecuteAsync($"ALTER SUBSCRIPTION {Sql.Ident(Name)} REFRESH PUBLICATION WITH (copy_data = true)", cancellationToken);
        }

        await ddl.AcknowledgeSatisfiedAsync(cancellationToken);
        return added.Concat(missing.Select(t => Sql.Display(t.Schema, t.Table))).Distinct().ToList();
    }

    /// <summary>Tables blue publishes (or should, by the deployment's list) that green's subscription does not know.</summary>
    public async Task<List<(string Schema, string Table)>> SkippedTablesAsync(bool repairPublication, CancellationToken cancellationToken)
    {
        List<(string, string)> published;
        await using (var blue = await sessions.OpenAsync(Side.Blue, cancellationToken))
        {
            if (repairPublication)
            {
                await AddListedTablesAsync(blue, cancellationToken);
            }

            published = await blue.QueryAsync(
                "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
                r => (r.GetString(0), r.GetString(1)),
                cancellationToken,
                Name);
        }

        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var subscribed = (await green.QueryAsync(
            """
            SELECT n.nspname::text, c.relname::text FROM pg_subscription_rel sr
            JOIN pg_subscription s ON s.oid = sr.srsubid JOIN pg_class c ON c.oid = sr.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE s.subname = $1
            """,
            r => (r.GetString(0), r.GetString(1)),
            cancellationToken,
            Name)).ToHashSet();
        return published.Where(t => !subscribed.Contains(t)).ToList();
    }

    /// <summary>
    /// A listed table dropped and created again on blue falls out of a FOR TABLE publication: put
    /// it back. A publication that lists every table because Teal's role on blue is no superuser
    /// gets blue's new tables too.
    /// </summary>
    private async Task AddListedTablesAsync(NpgsqlConnection blue, CancellationToken cancellationToken)
    {
        var tables = sessions.Spec.Tables.ToList();
        if (tables.Count == 0)
        {
            if (await blue.ScalarAsync<bool>("SELECT coalesce((SELECT puballtables FROM pg_publication WHERE pubname = $1), true)", cancellationToken, Name))
            {
                return;
            }

            tables = await blue.QueryAsync($"SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {PrerequisiteChecks.PublishedTables} ORDER BY 1", r => r.GetString(0), cancellationToken);
        }

        foreach (var table in tables)
        {
            var qualified = Sql.QualifiedFromDisplay(table);
            var listed = await blue.ScalarAsync<bool>(
                "SELECT to_regclass($2) IS NULL OR EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = $1 AND pr.prrelid = to_regclass($2))",
                cancellationToken,
                Name,
                qualified);
            if (!listed)
            {
                await blue.ExecuteAsync($"ALTER PUBLICATION {Sql.Ident(Name)} ADD TABLE {qualified}", cancellationToken);
            }
        }
    }
}
