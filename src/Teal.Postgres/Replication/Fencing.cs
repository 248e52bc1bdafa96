using System.Collections.Concurrent;
using System.Diagnostics;
using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;

namespace Teal.Postgres.Replication;

/// <summary>
/// The fence, in two layers (ARCHITECTURE.md, "The fence").
/// <para>
/// The hard layer is about who can be connected at all. PostgreSQL has no setting a superuser
/// cannot override for its own session (<c>default_transaction_read_only</c>,
/// <c>transaction_read_only</c>, triggers and <c>session_replication_role</c> are all the
/// session's to change), but it checks <c>rolcanlogin</c> for every role at connection start,
/// superusers included. So the fence takes LOGIN from every role but Teal's own
/// (<see cref="LinkSessions.ControlRole"/>, whose password only Teal holds), and the drain then
/// terminates every client session that is not Teal's. What was taken is recorded on the server
/// in the same transaction (the roles become members of <see cref="LoginsRole"/>, a shared
/// catalog every database sees), so a crash can never lose an operator's LOGIN setting, and the
/// unfence gives LOGIN back to exactly those roles. Each deployment holding a fence on a server
/// has a holder role there (<c>teal_…_fence_blue</c>): LOGIN comes back only when the last
/// holder lets go, since two deployments may share a server and the fence is server-wide.
/// </para>
/// <para>
/// The second layer is the old one: <c>default_transaction_read_only=on</c> through ALTER SYSTEM,
/// so that sessions still connected during the drain budget (whose transactions may finish)
/// start no new writing transaction unless they opt out. Role and database settings outrank
/// the server's (pg_db_role_setting), so overrides to "off" are reset while fenced and restored
/// on unfence. Teal's sessions set the parameter at connection start, and logical replication's
/// apply worker does not go through the executor's read-only check, so both keep writing.
/// </para>
/// </summary>
internal sealed class Fencing(LinkSessions sessions, TimeProvider time)
{
    /// <summary>The NOLOGIN role whose members are the roles a fence took LOGIN from.</summary>
    public const string LoginsRole = "teal_fence_logins";

    private const string Parameter = "default_transaction_read_only";

    /// <summary>The reload, returning the server's time at it: from then on the fence counts (<see cref="FencedAt"/>).</summary>
    private const string TimedReload = "SELECT clock_timestamp() FROM pg_reload_conf()";

    /// <summary>
    /// Client sessions that are not Teal's. Teal's are told by their login role, which no one
    /// else can log in as; never by application_name, which any client can set.
    /// </summary>
    public const string ClientSessions = $"""
        backend_type = 'client backend' AND pid <> pg_backend_pid() AND usename IS DISTINCT FROM '{LinkSessions.ControlRole}'
        """;

    /// <summary>Server time at which each side was last fenced (transactions older than it may write).</summary>
    private readonly ConcurrentDictionary<Side, DateTimeOffset> _fencedAt = new();

    public DateTimeOffset? FencedAt(Side side) => _fencedAt.TryGetValue(side, out var at) ? at : null;

    /// <summary>What <see cref="PrepareFenceAsync"/> did for a side, until its fence or unfence.</summary>
    private readonly ConcurrentDictionary<Side, PreparedFence> _prepared = new();

    /// <param name="HbaFile">The fenced pg_hba.conf written and not yet reloaded, or null for NOLOGIN.</param>
    private sealed record PreparedFence(string? HbaFile);

    /// <summary>Teal's own roles: its login, the fence's record and the fence holders (never copied, never fenced).</summary>
    public static bool IsTealRole(string name) =>
        name is LinkSessions.ControlRole or LoginsRole
        || (name.StartsWith("teal_", StringComparison.Ordinal) && (name.EndsWith("_fence_blue", StringComparison.Ordinal) || name.EndsWith("_fence_green", StringComparison.Ordinal)));

    private string Holder(Side side) => $"{sessions.Spec.Name}_fence_{LinkSessions.Role(side)}";

    /// <summary>
    /// Whether a side's hard layer is its pg_hba.conf (<see cref="HbaFence"/>) rather than NOLOGIN:
    /// any server Teal provisioned (its data directory and pg_hba.conf are Teal's), blue or green,
    /// before or after a switchover. NOLOGIN is a catalog change its physical readers replay, so
    /// they would refuse every login; the file is the server's own, so its readers keep admitting
    /// clients (read-only) while it refuses them. A server Teal did not provision keeps NOLOGIN:
    /// Teal does not own its configuration files.
    /// </summary>
    private bool FencesByHba(Side side) => FencedByHba(sessions.Spec, side);

    public static bool FencedByHba(LinkSpec spec, Side side) => side == Side.Green ? spec.GreenManaged : spec.BlueManaged;

    /// <summary>
    /// The fence's work no client notices before the fence's reload, done while the switchover's
    /// endpoints pause and drain: on a side fenced by its file the holder and the fenced
    /// pg_hba.conf, on every side the role and database overrides of the read-only default reset
    /// (they matter only once the server's default is "on") and that default written by ALTER
    /// SYSTEM. A server reads both files only when it reloads, and the writes wait for the disk
    /// (ALTER SYSTEM flushes its file: 4-27 ms on a small machine), so the write pause keeps only the
    /// reload, or NOLOGIN and the reload in one round trip (<see cref="FenceAsync"/>). Should the
    /// switchover go back instead, the unfence puts it all back. A reload by someone else before
    /// the fence fences the side early: a login is refused, or a transaction a client starts then
    /// is read-only.
    /// </summary>
    public async Task PrepareFenceAsync(Side side, CancellationToken cancellationToken)
    {
        await using var conn = await sessions.OpenAsync(side, cancellationToken);
        var fencedFile = FencesByHba(side) ? await CloseAsync(conn, side, cancellationToken) : null;
        await ResetOverridesAsync(conn, cancellationToken);
        await conn.ExecuteAsync($"ALTER SYSTEM SET {Parameter} = on", cancellationToken);
        _prepared[side] = new PreparedFence(fencedFile);
    }

    public async Task FenceAsync(Side side, CancellationToken cancellationToken)
    {
        var prepared = _prepared.TryRemove(side, out var ahead) ? ahead : null;
        await using var conn = await sessions.OpenAsync(side, cancellationToken);
        string? fencedFile = null;
        DateTime at;
        if (prepared is null)
        {
            fencedFile = await CloseAsync(conn, side, cancellationToken);
            await ResetOverridesAsync(conn, cancellationToken);
            at = await AlterSystemAndReloadAsync(conn, $"ALTER SYSTEM SET {Parameter} = on", cancellationToken);
        }
        else if (FencesByHba(side))
        {
            fencedFile = prepared.HbaFile;
            at = await conn.ScalarAsync<DateTime>(TimedReload, cancellationToken);
        }
        else
        {
            at = await TakeLoginsAsync(conn, side, Holder(side), cancellationToken, inPause: true) ?? throw new InvalidOperationException("the fence's reload returned no row");
        }

        _fencedAt[side] = new DateTimeOffset(DateTime.SpecifyKind(at, DateTimeKind.Utc));
        try
        {
            await WaitUntilObservedAsync(side, expectReadOnly: true, cancellationToken);
        }
        catch (TealException ex) when (fencedFile is not null && ex.Code is "fence.control-role-unavailable" or "connection.authentication-failed")
        {
            // The observer's new session met the fenced file first.
            throw await PutBackLockedOutAsync(conn, side, ex.Message, ex);
        }

        if (fencedFile is not null && !ConfirmedFencedFiles.ContainsKey(ConfirmedKey(side, fencedFile)))
        {
            // The observer saw the reload, so the postmaster now checks logins against the fenced
            // file: a new session of Teal's proves it still gets in. Once per file and server in
            // this process: the same rules admit the same login, and a login costs a server
            // process start inside the write pause (15-40 ms on a small machine), as a switchback
            // fencing a server that was green showed.
            await ConfirmLoginAsync(conn, side, cancellationToken);
            ConfirmedFencedFiles.TryAdd(ConfirmedKey(side, fencedFile), 0);
        }
    }

    // Fenced pg_hba.conf files Teal has logged in through, with the server they are on.
    private static readonly ConcurrentDictionary<string, byte> ConfirmedFencedFiles = new(StringComparer.Ordinal);

    private string ConfirmedKey(Side side, string fencedFile) => $"{sessions.Connection(side).Address}\n{fencedFile}";

    /// <summary>The hard layer, as it is for the side: holder and NOLOGIN, or holder and the server's own pg_hba.conf. Safe to repeat.</summary>
    /// <returns>The fenced pg_hba.conf, or null for NOLOGIN.</returns>
    private Task<string?> CloseAsync(NpgsqlConnection conn, Side side, CancellationToken cancellationToken) => CloseAsync(conn, side, Holder(side), cancellationToken);

    private async Task<string?> CloseAsync(NpgsqlConnection conn, Side side, string holder, CancellationToken cancellationToken)
    {
        if (!FencesByHba(side))
        {
            await TakeLoginsAsync(conn, side, holder, cancellationToken);
            return null;
        }

        // The holder is made in the round trip that reads the file (committed before the file changes).
        return await HbaFence.CloseAsync(
            conn,
            LinkSessions.Role(side),
            $$"""
            DO $teal_holder$
            BEGIN
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {{Sql.Literal(holder)}}) THEN
                CREATE ROLE {{Sql.Ident(holder)}} NOLOGIN;
              END IF;
            END
            $teal_holder$
            """,
            cancellationToken);
    }

    private async Task ConfirmLoginAsync(NpgsqlConnection conn, Side side, CancellationToken cancellationToken)
    {
        var login = sessions.Connection(side);
        try
        {
            await using var fresh = new NpgsqlConnection(Connections.PostgresConnections.Builder(login, pooling: false).ConnectionString);
            await fresh.OpenAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
        {
            throw await PutBackLockedOutAsync(conn, side, (ex as PostgresException)?.MessageText ?? ex.GetType().Name, ex);
        }
    }

    /// <summary>Puts the server's own pg_hba.conf back through the session still open, and says why.</summary>
    private static async Task<TealException> PutBackLockedOutAsync(NpgsqlConnection conn, Side side, string why, Exception cause)
    {
        await HbaFence.OpenAsync(conn, CancellationToken.None);
        await conn.ExecuteAsync("SELECT pg_reload_conf()", CancellationToken.None);
        return new TealException(
            "fence.hba-locks-out",
            $"{LinkSessions.Role(side)}: with only {LinkSessions.ControlRole}'s rules of its pg_hba.conf kept, Teal could not log in ({why}); its own file was put back",
            $"give {LinkSessions.ControlRole} (or all) a rule of its own in {LinkSessions.Role(side)}'s pg_hba.conf for the address Teal connects from",
            cause);
    }

    /// <summary>
    /// Keeps a side fenced, held now under the other side's holder name: the side just left by
    /// a cutover becomes the standby of the reversed link, whose open-green lets go of exactly
    /// that holder at the next cutover. One transaction for the new holder (the fence is
    /// re-asserted with it, in the side's own layer), then the old holder is dropped: never a
    /// moment without a holder.
    /// </summary>
    public async Task HandOverAsync(Side side, CancellationToken cancellationToken)
    {
        await using var conn = await sessions.OpenAsync(side, cancellationToken);
        var other = side == Side.Blue ? Side.Green : Side.Blue;
        await CloseAsync(conn, side, Holder(other), cancellationToken);
        if (FencesByHba(side))
        {
            // Already closed since the cutover's fence; a repeat after a crash that found it
            // open has just closed it again, and the postmaster must read it.
            await conn.ExecuteAsync("SELECT pg_reload_conf()", cancellationToken);
        }

        await conn.ExecuteAsync($"DROP ROLE IF EXISTS {Sql.Ident(Holder(side))}", cancellationToken);
    }

    /// <summary>
    /// Drops the fence's record role once nothing uses it (no holder, no member), so a server
    /// Teal is done with keeps nothing of Teal's.
    /// </summary>
    public static async Task DropRecordIfUnusedAsync(NpgsqlConnection conn, CancellationToken cancellationToken) =>
        await conn.ExecuteAsync(
            $$"""
            DO $teal_record$
            BEGIN
              IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{{LoginsRole}}')
                 AND NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname LIKE 'teal\_%\_fence\_blue' OR rolname LIKE 'teal\_%\_fence\_green')
                 AND NOT EXISTS (SELECT 1 FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid WHERE g.rolname = '{{LoginsRole}}') THEN
                DROP ROLE {{LoginsRole}};
              END IF;
            END
            $teal_record$
            """,
            cancellationToken);

    /// <summary>
    /// Lets go of this deployment's fence on <paramref name="side"/>. <paramref name="loginsBack"/>
    /// runs once clients can log in again, beside the rest of the unfence: a session that logs in
    /// before the observer below sees the read-only default reset has the reload pending, and a
    /// backend applies a pending reload before each command it reads.
    /// </summary>
    public async Task UnfenceAsync(Side side, CancellationToken cancellationToken, Func<CancellationToken, Task>? loginsBack = null)
    {
        await using var conn = await sessions.OpenAsync(side, cancellationToken);
        // Blue is unfenced only by a rollback, which retries until it succeeds: a role lock may
        // refuse it, naming the session (see ReleaseAsync). Green's unfence runs after the point
        // of no return, where a refusal would stop the switchover: it waits, as it always did.
        // Opening a cutover's green (loginsBack) commits the release without waiting for its WAL
        // flush, inside the write pause: losing it to a crash of green can only leave green
        // fenced, never two sides writable, and stop-replication's unfence, after the resume,
        // releases again with a flushed commit (as does any client's commit on green before it).
        var released = await ReleaseAsync(conn, side, Holder(side), capRoleLocks: side == Side.Blue, flushed: loginsBack is null, cancellationToken);
        _fencedAt.TryRemove(side, out _);
        _prepared.TryRemove(side, out _);
        if (!released)
        {
            // Another deployment still fences this server: it stays fenced until that one lets go.
            return;
        }

        // The file is its own record: opened whatever this link would fence the side with, so a
        // fence made in the other layer (a server fenced before it was known to be Teal's, or
        // under an older Teal) is lifted all the same. Reading it needs a superuser, which Teal's
        // login is on every server Teal provisioned (is_superuser is reported at login: no round trip).
        var fileOpened = (FencesByHba(side) || IsSuperuser(conn)) && await HbaFence.OpenAsync(conn, cancellationToken);
        if (!fileOpened && loginsBack is null && !await ReadOnlyDefaultSetAsync(conn, cancellationToken))
        {
            // Open already (stop-replication makes sure, right after the switchover's open-green
            // opened it): a reload now would make every client backend on the side read the
            // configuration files again at its next statement, just as the resumed clients start.
            await RestoreOverridesAsync(conn, cancellationToken);
            return;
        }

        // One reload for both files, and only after both are written. Each backend reads the
        // files itself when it handles a reload signal: with one reload for pg_hba.conf and a
        // second for the read-only default, the observer below could handle the first signal
        // after the second file was written, see "off" and let clients through while the
        // postmaster had not yet handled the second reload. A session that had logged in on
        // green in between (a moved one, logged in once logins came back) then had no signal
        // coming and met its client's first write with "read-only transaction" (bench/switchover's
        // loop caught it). With one reload, "off" on the observer means the postmaster has
        // handled it: later logins inherit "off", earlier ones have the signal pending, which a
        // backend handles before it runs its next command.
        await AlterSystemAndReloadAsync(conn, $"ALTER SYSTEM RESET {Parameter}", cancellationToken);

        // Logins come back with the reload (an early login that still meets the fenced file, or
        // NOLOGIN, is made again at the resume). The endpoints log in beside the observation.
        // The role and database overrides the fence reset are "off" values, the server's default
        // from the reload on, so a cutover's green (loginsBack) gets them back after the resume,
        // from stop-replication's unfence: no client meets a difference, and the pause does not
        // wait for that round trip beside the endpoints' logins.
        await Task.WhenAll(loginsBack?.Invoke(cancellationToken) ?? Task.CompletedTask, RestAsync());

        async Task RestAsync()
        {
            if (loginsBack is null)
            {
                await RestoreOverridesAsync(conn, cancellationToken);
            }

            await WaitUntilObservedAsync(side, expectReadOnly: false, cancellationToken);
        }
    }

    /// <summary>
    /// <paramref name="alterSystem"/>, then the reload, in one round trip (both inside the write
    /// pause); returns when the server handled the reload call. ALTER SYSTEM runs only outside a
    /// transaction block: first in the pipeline it is, and it commits at once, so the reload runs
    /// in a transaction of its own after it; should it fail, the server skips the reload (the rest
    /// of a pipeline after an error is skipped up to its Sync).
    /// </summary>
    private static async Task<DateTime> AlterSystemAndReloadAsync(NpgsqlConnection conn, string alterSystem, CancellationToken cancellationToken)
    {
        await using var batch = conn.CreateBatch();
        batch.BatchCommands.Add(new NpgsqlBatchCommand(alterSystem));
        batch.BatchCommands.Add(new NpgsqlBatchCommand(TimedReload));
        // ALTER SYSTEM returns no result set: the reader starts on the reload's.
        await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
        if (!await reader.ReadAsync(cancellationToken))
        {
            throw new InvalidOperationException("the reload after ALTER SYSTEM returned no row");
        }

        return reader.GetDateTime(0);
    }

    /// <summary>Whether the fence's read-only default (ALTER SYSTEM) is in the server's postgresql.auto.conf.</summary>
    private static Task<bool> ReadOnlyDefaultSetAsync(NpgsqlConnection conn, CancellationToken cancellationToken) =>
        conn.ScalarAsync<bool>(
            $"SELECT EXISTS (SELECT 1 FROM pg_file_settings WHERE name = '{Parameter}' AND sourcefile LIKE '%/postgresql.auto.conf')",
            cancellationToken);

    private static bool IsSuperuser(NpgsqlConnection conn) =>
        conn.PostgresParameters.TryGetValue("is_superuser", out var value) && value == "on";

    /// <summary>
    /// Takes LOGIN from every role that has it (Teal's own excepted) and records each in
    /// <see cref="LoginsRole"/>, in one transaction: either a role is both recorded and
    /// NOLOGIN, or neither. Safe to repeat: it also re-asserts the fence after a drain, in
    /// case a superuser session gave a role LOGIN back meanwhile.
    /// </summary>
    /// <remarks>
    /// A role's row changed by a transaction still open (a superuser's <c>ALTER ROLE</c> not yet
    /// committed) makes <c>ALTER ROLE … NOLOGIN</c> wait for that transaction, inside the write
    /// pause; it waits <see cref="RoleLockWait"/> at most, then the fence refuses, naming the
    /// sessions, and takes nothing (one transaction). Without the cap the clients stayed held until
    /// the switchover's timeout rolled it back, with a message that said only that it timed out.
    /// <para>
    /// <c>inPause</c>: the switchover's fence, its read-only default already written (see
    /// <see cref="PrepareFenceAsync"/>). The reload goes in the same round trip, after the logins
    /// are taken (skipped should that fail), and its server time is returned. The transaction
    /// commits without waiting for its WAL flush: that flush is a disk write inside the write
    /// pause, and the catch-up marker's commit on the same server, which the switchover waits
    /// for before its point of no return, flushes it anyway. Should the server crash before that,
    /// the switchover goes back and the unfence finds nothing to give back.
    /// </para>
    /// </remarks>
    private static async Task<DateTime?> TakeLoginsAsync(NpgsqlConnection conn, Side side, string holder, CancellationToken cancellationToken, bool inPause = false)
    {
        var sql = $$"""
            DO $teal_fence$
            DECLARE r record;
            BEGIN
              PERFORM pg_catalog.set_config('lock_timeout', '{{(int)RoleLockWait.TotalMilliseconds}}', true);
              {{(inPause ? "PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);" : string.Empty)}}
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{{LoginsRole}}') THEN
                CREATE ROLE {{LoginsRole}} NOLOGIN;
              END IF;
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {{Sql.Literal(holder)}}) THEN
                CREATE ROLE {{Sql.Ident(holder)}} NOLOGIN;
              END IF;
              FOR r IN SELECT oid, rolname FROM pg_roles WHERE rolcanlogin AND rolname <> '{{LinkSessions.ControlRole}}' LOOP
                -- pg_auth_members, not pg_has_role: a superuser "has" every role.
                IF NOT EXISTS (SELECT 1 FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid
                               WHERE g.rolname = '{{LoginsRole}}' AND a.member = r.oid) THEN
                  EXECUTE format('GRANT {{LoginsRole}} TO %I', r.rolname);
                END IF;
                EXECUTE format('ALTER ROLE %I NOLOGIN', r.rolname);
              END LOOP;
            END
            $teal_fence$
            """;
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                if (!inPause)
                {
                    await conn.ExecuteAsync(sql, cancellationToken);
                    return null;
                }

                await using var batch = conn.CreateBatch();
                batch.BatchCommands.Add(new NpgsqlBatchCommand(sql));
                batch.BatchCommands.Add(new NpgsqlBatchCommand(TimedReload));
                return (DateTime?)await batch.ExecuteScalarAsync(cancellationToken);
            }
            catch (PostgresException ex) when (attempt < 3 && ex.SqlState is PostgresErrorCodes.DuplicateObject or PostgresErrorCodes.UniqueViolation or PostgresErrorCodes.InternalError)
            {
                // Another deployment fenced the same server at the same moment ("tuple concurrently
                // updated" is XX000): look again.
            }
            catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.LockNotAvailable)
            {
                throw await RoleLockedAsync(conn, side, "the fence must take LOGIN from", "nothing was fenced", ", then switch over again", ex, cancellationToken);
            }
        }
    }

    /// <summary>The refusal when an open transaction held a role's row longer than <see cref="RoleLockWait"/>: what it blocked, what that left, and whom to end.</summary>
    private static async Task<TealException> RoleLockedAsync(NpgsqlConnection conn, Side side, string role, string outcome, string then, PostgresException cause, CancellationToken cancellationToken) =>
        new(
            "fence.role-locked",
            $"{LinkSessions.Role(side)}: an open transaction is changing a role {role}, and still held it after {RoleLockWait.TotalSeconds:0.#} s; {outcome}. Sessions with uncommitted role changes: {await RoleChangersAsync(conn, cancellationToken)}",
            $"commit or roll back that transaction on {LinkSessions.Role(side)} (or end its session with pg_terminate_backend){then}",
            cause);

    /// <summary>How long the fence waits for a role's row that an open transaction has changed.</summary>
    private static readonly TimeSpan RoleLockWait = TimeSpan.FromSeconds(2);

    /// <summary>Sessions whose open transaction changed roles (they hold pg_authid until it ends), as "pid N (user, application, since T)".</summary>
    private static async Task<string> RoleChangersAsync(NpgsqlConnection conn, CancellationToken cancellationToken)
    {
        var sessions = await conn.QueryAsync(
            """
            SELECT format('pid %s (%s, %s, transaction since %s)', a.pid, a.usename, coalesce(nullif(a.application_name, ''), 'no application name'), to_char(a.xact_start AT TIME ZONE 'UTC', 'HH24:MI:SS "UTC"'))
            FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'relation' AND l.relation = 'pg_catalog.pg_authid'::regclass AND l.granted
              AND l.mode = 'RowExclusiveLock' AND l.pid <> pg_catalog.pg_backend_pid()
            ORDER BY a.xact_start
            """,
            r => r.GetString(0),
            cancellationToken);
        return sessions.Count == 0 ? "none left (it has ended since)" : string.Join("; ", sessions);
    }

    /// <summary>
    /// Lets go of one holder's fence. When it was the last holder, gives LOGIN back to exactly
    /// the recorded roles and returns true; otherwise leaves the logins off. One batch, so one
    /// transaction and one round trip (it runs inside the write pause, at open-green): the
    /// holder is never gone while the logins it held stay taken with no holder left.
    /// </summary>
    /// <remarks>
    /// With <paramref name="capRoleLocks"/>, as the fence, it waits <see cref="RoleLockWait"/> at most for a recorded role's row that an
    /// open transaction changed, then refuses naming the sessions, and has let go of nothing. A
    /// rollback retries its undo until it succeeds, so the side stays fenced until that
    /// transaction ends either way; the refusal makes each retry's event say what to end
    /// instead of "canceling statement due to user request" after the undo's own timeout.
    /// </remarks>
    private static async Task<bool> ReleaseAsync(NpgsqlConnection conn, Side side, string holder, bool capRoleLocks, bool flushed, CancellationToken cancellationToken)
    {
        await using var batch = conn.CreateBatch();
        // One transaction (one Sync): the settings hold for the statements after them.
        var settings = new List<string>();
        if (capRoleLocks)
        {
            settings.Add($"pg_catalog.set_config('lock_timeout', '{(int)RoleLockWait.TotalMilliseconds}', true)");
        }

        if (!flushed)
        {
            settings.Add("pg_catalog.set_config('synchronous_commit', 'off', true)");
        }

        if (settings.Count > 0)
        {
            batch.BatchCommands.Add(new NpgsqlBatchCommand($"SELECT {string.Join(", ", settings)}"));
        }

        batch.BatchCommands.Add(new NpgsqlBatchCommand($"DROP ROLE IF EXISTS {Sql.Ident(holder)}"));
        batch.BatchCommands.Add(new NpgsqlBatchCommand(
            $$"""
            DO $teal_release$
            DECLARE r record;
            BEGIN
              IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE {{HolderPattern}}) THEN
                {{RestoreLoginsLoop}}
              END IF;
            END
            $teal_release$
            """));
        batch.BatchCommands.Add(new NpgsqlBatchCommand($"SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE {HolderPattern})"));
        try
        {
            await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
            if (settings.Count > 0)
            {
                await reader.NextResultAsync(cancellationToken); // past set_config's row
            }

            do
            {
                if (await reader.ReadAsync(cancellationToken))
                {
                    return reader.GetBoolean(0);
                }
            }
            while (await reader.NextResultAsync(cancellationToken));

            throw new InvalidOperationException("the fence release batch returned no row");
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.LockNotAvailable)
        {
            throw await RoleLockedAsync(conn, side, "the fence took LOGIN from", "the fence stays until it ends", "; Teal lets go of the fence at its next attempt", ex, cancellationToken);
        }
    }

    private const string HolderPattern = @"rolname LIKE 'teal\_%\_fence\_blue' OR rolname LIKE 'teal\_%\_fence\_green'";

    private const string RestoreLoginsLoop = $"""
        FOR r IN SELECT m.rolname FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
                 WHERE g.rolname = '{LoginsRole}' LOOP
          EXECUTE format('ALTER ROLE %I LOGIN', r.rolname);
          EXECUTE format('REVOKE {LoginsRole} FROM %I', r.rolname);
        END LOOP;
        """;

    /// <summary>Deployments whose fence is on this server, by holder role.</summary>
    public static async Task<List<string>> HoldersAsync(NpgsqlConnection conn, CancellationToken cancellationToken) =>
        await conn.QueryAsync(
            "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'teal\\_%\\_fence\\_blue' OR rolname LIKE 'teal\\_%\\_fence\\_green' ORDER BY 1",
            r => r.GetString(0),
            cancellationToken);

    /// <summary>
    /// Lifts every holder's fence from a server (<c>teal instance unfence</c>): drops the
    /// holders, gives LOGIN back to the recorded roles, resets the second layer and the
    /// role/database overrides recorded in the connection's database. Returns the roles.
    /// </summary>
    public static async Task<IReadOnlyList<string>> LiftAllAsync(ConnectionInfo tealLogin, CancellationToken cancellationToken)
    {
        await using var source = Connections.PostgresConnections.DataSource(tealLogin, pooling: false);
        await using var conn = await Connections.PostgresConnections.OpenAsync(source, tealLogin, "instance", cancellationToken);
        var roles = await conn.QueryAsync(
            $"SELECT m.rolname::text FROM pg_auth_members a JOIN pg_roles g ON g.oid = a.roleid JOIN pg_roles m ON m.oid = a.member WHERE g.rolname = '{LoginsRole}' ORDER BY 1",
            r => r.GetString(0),
            cancellationToken);
        foreach (var holder in await HoldersAsync(conn, cancellationToken))
        {
            await conn.ExecuteAsync($"DROP ROLE IF EXISTS {Sql.Ident(holder)}", cancellationToken);
        }

        await RestoreLoginsAsync(conn, cancellationToken);
        // A managed server fenced by its pg_hba.conf (the file is its own record); reading it needs a superuser.
        if (await LinkSessions.IsSuperuserAsync(conn, cancellationToken))
        {
            await HbaFence.OpenAsync(conn, cancellationToken);
        }

        await AlterSystemAndReloadAsync(conn, $"ALTER SYSTEM RESET {Parameter}", cancellationToken);
        await RestoreOverridesAsync(conn, cancellationToken);
        await DropRecordIfUnusedAsync(conn, cancellationToken);
        return roles;
    }

    /// <summary>Gives LOGIN back to every role the fence took it from, in one transaction.</summary>
    public static async Task RestoreLoginsAsync(NpgsqlConnection conn, CancellationToken cancellationToken) =>
        await conn.ExecuteAsync(
            $$"""
            DO $teal_unfence$
            DECLARE r record;
            BEGIN
              {{RestoreLoginsLoop}}
            END
            $teal_unfence$
            """,
            cancellationToken);

    /// <summary>
    /// pg_reload_conf() only signals the postmaster, which re-reads the configuration and then
    /// signals every backend in one pass; a backend applies the reload before its next command.
    /// So once an observer session (no override of the parameter) shows the new value, every
    /// backend has been signalled and applies it before its next statement, and every backend
    /// started from then on starts with it — provided the observer read the files for this
    /// reload, not for an older one it handled late: a backend reads the files itself, so fence and
    /// unfence each write every file first and reload once. The observer comes from a pool the switchover warmed
    /// before the pause, so this costs round trips, not connection setups.
    /// </summary>
    private async Task WaitUntilObservedAsync(Side side, bool expectReadOnly, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        var expected = expectReadOnly ? "on" : "off";
        while (true)
        {
            await using (var observer = await sessions.OpenObserverAsync(side, cancellationToken))
            {
                var value = await observer.ScalarAsync<string>($"SHOW {Parameter}", cancellationToken);
                if (value == expected)
                {
                    return;
                }
            }

            if (Stopwatch.GetElapsedTime(started) > TimeSpan.FromSeconds(10))
            {
                throw new TealException(
                    "fence.not-applied",
                    $"{LinkSessions.Role(side)}: {Parameter} did not become {expected} within 10 s of the reload",
                    $"check {LinkSessions.Role(side)}'s server log for configuration errors, and that no role or database sets {Parameter}");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(1), time, cancellationToken);
        }
    }

    private static async Task ResetOverridesAsync(NpgsqlConnection conn, CancellationToken cancellationToken)
    {
        // Overrides that keep a role or database writable; "on" overrides are harmless.
        var overrides = await conn.QueryAsync(
            $"""
            SELECT coalesce(d.datname, ''), coalesce(r.rolname, ''), split_part(cfg, '=', 2)
            FROM pg_db_role_setting s
            LEFT JOIN pg_database d ON d.oid = s.setdatabase
            LEFT JOIN pg_roles r ON r.oid = s.setrole,
            unnest(s.setconfig) cfg
            WHERE cfg LIKE '{Parameter}=%' AND lower(split_part(cfg, '=', 2)) NOT IN ('on', 'true', '1', 'yes')
            """,
            r => (Database: r.GetString(0), Role: r.GetString(1), Value: r.GetString(2)),
            cancellationToken);
        if (overrides.Count == 0)
        {
            return;
        }

        await TealObjects.InstallTablesAsync(conn, cancellationToken);
        foreach (var o in overrides)
        {
            // Recorded before it is reset, so a crash in between never loses the operator's setting.
            await conn.ExecuteAsync(
                "INSERT INTO teal.fence_overrides (server_id, database_name, role_name, value) SELECT system_identifier, $1, $2, $3 FROM pg_control_system() ON CONFLICT DO NOTHING",
                cancellationToken,
                o.Database,
                o.Role,
                o.Value);
            await conn.ExecuteAsync(AlterSql(o.Database, o.Role, $"RESET {Parameter}"), cancellationToken);
        }
    }

    private static async Task RestoreOverridesAsync(NpgsqlConnection conn, CancellationToken cancellationToken)
    {
        List<(string Database, string Role, string Value)> saved;
        try
        {
            // One round trip (open-green runs this inside the write pause); a server Teal never
            // installed its tables on has nothing saved.
            saved = await conn.QueryAsync(
                "SELECT database_name, role_name, value FROM teal.fence_overrides WHERE server_id = (SELECT system_identifier FROM pg_control_system())",
                r => (Database: r.GetString(0), Role: r.GetString(1), Value: r.GetString(2)),
                cancellationToken);
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.UndefinedTable or PostgresErrorCodes.InvalidSchemaName)
        {
            return;
        }

        foreach (var o in saved)
        {
            await conn.ExecuteAsync(AlterSql(o.Database, o.Role, $"SET {Parameter} = {Sql.Literal(o.Value)}"), cancellationToken);
            await conn.ExecuteAsync(
                "DELETE FROM teal.fence_overrides WHERE server_id = (SELECT system_identifier FROM pg_control_system()) AND database_name = $1 AND role_name = $2",
                cancellationToken,
                o.Database,
                o.Role);
        }
    }

    private static string AlterSql(string database, string role, string action) => (database, role) switch
    {
        ("", "") => throw new InvalidOperationException("pg_db_role_setting row without role and database"),
        ("", _) => $"ALTER ROLE {Sql.Ident(role)} {action}",
        (_, "") => $"ALTER DATABASE {Sql.Ident(database)} {action}",
        _ => $"ALTER ROLE {Sql.Ident(role)} IN DATABASE {Sql.Ident(database)} {action}",
    };

    /// <summary>
    /// Waits for transactions of client sessions that were open when the side was fenced (they
    /// may still write, and commit before blue's final position is read, so they replicate);
    /// then terminates every client session that is not Teal's, idle ones included (an idle
    /// session could begin a writing transaction later), until none is left. A prepared
    /// transaction left on the side refuses the step: no one could ever commit it there (no
    /// client can log in), and it is not on green.
    /// </summary>
    /// <remarks>
    /// The fence is not written again first. On a side fenced by NOLOGIN every look asks whether a
    /// role has LOGIN again and fences it (<see cref="TerminateClientsAsync"/>); on a side fenced
    /// by its pg_hba.conf writing the file again would change nothing the server does until a
    /// reload. Where no transaction was open at the fence, the first look rides in the round trip
    /// that asks (NOLOGIN sides; a side fenced by its file reads its postmaster.pid there, which
    /// the looks need first).
    /// </remarks>
    public async Task<DrainResult> DrainAsync(Side side, TimeSpan budget, CancellationToken cancellationToken)
    {
        await using var conn = await sessions.OpenAsync(side, cancellationToken);
        var fencedAt = FencedAt(side) ?? time.GetUtcNow();
        var inTransaction = $"""
            SELECT pid FROM pg_stat_activity
            WHERE {ClientSessions} AND xact_start IS NOT NULL AND xact_start <= $1
            """;
        var byHba = FencesByHba(side);
        var loginsBack = LoginsBackSql(byHba);
        List<int> initial;
        string? pidFile = null;
        Look? first = null;
        if (byHba)
        {
            // A side fenced by its pg_hba.conf is a server Teal provisioned: where it runs on this
            // machine, the drain also ends the backends its /proc shows still waiting for a startup
            // packet (LocalPostmaster). Its postmaster.pid (a superuser's to read, which Teal's
            // login is on such a server) comes with the first question.
            (initial, pidFile) = (await conn.QueryAsync(
                $"SELECT ARRAY({inTransaction}), {(IsSuperuser(conn) ? "pg_read_file('postmaster.pid')" : "NULL::text")}",
                r => (r.GetFieldValue<int[]>(0).ToList(), r.IsDBNull(1) ? null : r.GetString(1)),
                cancellationToken,
                fencedAt))[0];
        }
        else
        {
            (initial, first) = (await conn.QueryAsync(
                $"SELECT ARRAY({inTransaction}), {LookColumns(loginsBack, starting: true)}",
                r => (r.GetFieldValue<int[]>(0).ToList(), ReadLook(r, 1)),
                cancellationToken,
                fencedAt))[0];
        }

        var started = Stopwatch.GetTimestamp();
        var remaining = initial;
        while (remaining.Count > 0 && Stopwatch.GetElapsedTime(started) < budget)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(5), time, cancellationToken);
            remaining = await conn.QueryAsync(inTransaction, r => r.GetInt32(0), cancellationToken, fencedAt);
        }

        var stillWriting = remaining.Intersect(initial).ToHashSet();
        // The first look is only as fresh as the question it came with: stale once the budget was waited on.
        var (closed, prepared) = await TerminateClientsAsync(side, conn, LocalPostmaster.Find(pidFile), initial.Count == 0 ? first : null, cancellationToken);
        RefusePrepared(side, prepared);
        var terminated = closed.Count(stillWriting.Contains);
        return new DrainResult(initial.Count - stillWriting.Count, terminated) { ClosedIdle = closed.Count - terminated };
    }

    /// <summary>
    /// Terminates every non-Teal client session and returns their pids; confirms none is left.
    /// On a side fenced by NOLOGIN each look also asks whether a role has LOGIN again: a
    /// superuser session still connected could give a role LOGIN back until it is itself
    /// terminated, and that role could then log in to the fenced side for good. Such a role is
    /// fenced again and the looks start over (same round trip as the look: nothing added when
    /// no one did). Returns the prepared transactions the last look found as well.
    /// </summary>
    /// <remarks>
    /// On a side fenced by its pg_hba.conf a backend still logging in is a client session too.
    /// The file is checked in the backend, against the rules the postmaster had when it forked
    /// it: a client that connected before the fence's reload passes the server's own rules, and
    /// could finish its password exchange after the drain (PostgreSQL gives it
    /// <c>authentication_timeout</c>) and write with <c>BEGIN READ WRITE</c>. NOLOGIN has no such
    /// gap: <c>rolcanlogin</c> is read after the password exchange. Up to PostgreSQL 17 such a
    /// backend is not in pg_stat_activity until it has logged in, but it holds its virtual
    /// transaction id's lock from before the exchange, so pg_locks shows it (18 lists it as
    /// <c>starting</c>); one that has not sent its startup packet has no lock and no entry
    /// either, and only <paramref name="postmaster"/> (this machine's /proc) finds it.
    /// </remarks>
    private async Task<(HashSet<int> Closed, IReadOnlyList<string> Prepared)> TerminateClientsAsync(
        Side side, NpgsqlConnection conn, LocalPostmaster? postmaster, Look? first, CancellationToken cancellationToken)
    {
        var closed = new HashSet<int>();
        var started = Stopwatch.GetTimestamp();
        var byHba = FencesByHba(side);
        var loginsBack = LoginsBackSql(byHba);
        var quiet = 0;
        IReadOnlyList<string> prepared = [];
        // Two looks in a row with nothing to end: a backend that passed its login check just
        // before LOGIN was taken shows up in pg_stat_activity within microseconds of that check.
        // On a NOLOGIN side one look is enough when no backend is starting: one that reads
        // rolcanlogin does so in its startup transaction, whose virtualxid lock it holds until
        // it is in pg_stat_activity, so with no such lock unaccounted for, every backend either
        // is in the look or will read NOLOGIN. A starting one may also be a client stalled in its
        // password exchange (NOLOGIN refuses it after), so it is not waited for beyond the two looks.
        while (quiet < 2)
        {
            // Before the look: a child that logs in meanwhile is in the look's pg_stat_activity.
            // (A first look given by the caller comes from a NOLOGIN side: no postmaster to read.)
            var silent = first is null ? postmaster?.ChildrenBeforeStartup() ?? [] : [];
            var look = first ?? await LookAsync(conn, loginsBack, byHba, cancellationToken);
            first = null;
            prepared = look.Prepared;
            if (look.LoginGivenBack)
            {
                await CloseAsync(conn, side, cancellationToken);
            }

            silent = silent.Except(look.Known).ToList();
            if (look.Pids.Length == 0 && silent.Count == 0)
            {
                quiet = look.LoginGivenBack ? 0 : !byHba && look.Starting.Length == 0 ? 2 : quiet + 1;
                if (quiet < 2)
                {
                    await Task.Delay(TimeSpan.FromMilliseconds(2), time, cancellationToken);
                }

                continue;
            }

            quiet = 0;
            closed.UnionWith(look.Pids);
            closed.UnionWith(silent);
            postmaster?.Terminate(silent);
            var pids = look.Pids;
            if (pids.Length > 0)
            {
                await conn.ExecuteAsync("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", cancellationToken, pids);
            }

            // Wait until they are gone, so the caller's next position read sees no late commit.
            while ((postmaster is not null && silent.Any(postmaster.IsRunningChild))
                || (pids.Length > 0 && await conn.ScalarAsync<long>(
                    "SELECT count(*) FROM (SELECT pid FROM pg_stat_activity UNION ALL SELECT pid FROM pg_locks WHERE locktype = 'virtualxid') p WHERE pid = ANY($1)",
                    cancellationToken,
                    pids) > 0))
            {
                if (Stopwatch.GetElapsedTime(started) > TimeSpan.FromSeconds(30))
                {
                    throw new TealException(
                        "fence.sessions-remain",
                        $"{LinkSessions.Role(side)}: {pids.Length + silent.Count} client session(s) did not end within 30 s of being terminated",
                        $"look at pg_stat_activity on {LinkSessions.Role(side)} (a backend stuck in I/O or an extension may ignore the signal)");
                }

                await Task.Delay(TimeSpan.FromMilliseconds(2), time, cancellationToken);
            }
        }

        return (closed, prepared);
    }

    /// <summary>One look at a side's sessions (<see cref="LookAsync"/>).</summary>
    /// <param name="Pids">The client sessions to end (on a side fenced by its file, with the backends still logging in).</param>
    /// <param name="LoginGivenBack">Whether a role has LOGIN again (NOLOGIN sides).</param>
    /// <param name="Known">Every pid pg_stat_activity knows (a postmaster's child it lists is not one still waiting for its startup packet).</param>
    /// <param name="Prepared">The prepared transactions (the drain refuses any).</param>
    /// <param name="Starting">
    /// Backends still logging in (a startup transaction's virtualxid lock, no pg_stat_activity
    /// entry yet) on a NOLOGIN side: while there are any, the drain looks twice, as it always
    /// did. On a side fenced by its file they are among <paramref name="Pids"/>, ended at once.
    /// </param>
    private sealed record Look(int[] Pids, bool LoginGivenBack, HashSet<int> Known, string[] Prepared, int[] Starting);

    private static string LoginsBackSql(bool byHba) => byHba
        ? "false"
        : $"EXISTS (SELECT 1 FROM pg_roles WHERE rolcanlogin AND rolname <> '{LinkSessions.ControlRole}')";

    /// <summary>
    /// The columns of a look, read by <see cref="ReadLook"/>. Backends starting are asked for
    /// here on a NOLOGIN side only: a side fenced by its file reads pg_locks in a statement of its
    /// own, before these (<see cref="LookAsync"/>).
    /// </summary>
    private static string LookColumns(string loginsBack, bool starting) =>
        $"""
        ARRAY(SELECT pid FROM pg_stat_activity WHERE {ClientSessions}), {loginsBack}, ARRAY(SELECT pid FROM pg_stat_activity), ARRAY({PreparedTransactionsSql}),
        {(starting ? """
            ARRAY(SELECT l.pid FROM pg_locks l WHERE l.locktype = 'virtualxid' AND l.pid IS NOT NULL AND l.pid <> pg_backend_pid()
                  AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = l.pid))
            """ : "ARRAY[]::int[]")}
        """;

    private static Look ReadLook(NpgsqlDataReader r, int at) =>
        new(r.GetFieldValue<int[]>(at), r.GetBoolean(at + 1), r.GetFieldValue<int[]>(at + 2).ToHashSet(), r.GetFieldValue<string[]>(at + 3), r.GetFieldValue<int[]>(at + 4));

    /// <summary>
    /// One look at the side's sessions. On a side fenced by its file pg_locks is read first, in
    /// a statement of its own in the same round trip, so that a backend which finishes its login
    /// between the two reads is judged by its role in pg_stat_activity (a session of Teal's is
    /// not ended) rather than as one starting.
    /// </summary>
    private static async Task<Look> LookAsync(NpgsqlConnection conn, string loginsBack, bool withStarting, CancellationToken cancellationToken)
    {
        var sessions = $"SELECT {LookColumns(loginsBack, starting: !withStarting)}";
        if (!withStarting)
        {
            return (await conn.QueryAsync(sessions, r => ReadLook(r, 0), cancellationToken))[0];
        }

        await using var batch = conn.CreateBatch();
        batch.BatchCommands.Add(new NpgsqlBatchCommand("SELECT ARRAY(SELECT pid FROM pg_locks WHERE locktype = 'virtualxid' AND pid IS NOT NULL AND pid <> pg_backend_pid())"));
        batch.BatchCommands.Add(new NpgsqlBatchCommand(sessions));
        await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        var locked = reader.GetFieldValue<int[]>(0);
        await reader.NextResultAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        var look = ReadLook(reader, 0);
        var clients = look.Pids.ToHashSet();
        clients.UnionWith(locked.Where(pid => !look.Known.Contains(pid)));
        return look with { Pids = [.. clients] };
    }

    private static void RefusePrepared(Side side, IReadOnlyList<string> prepared)
    {
        if (prepared.Count > 0)
        {
            throw new TealException(
                "fence.prepared-transactions",
                $"{LinkSessions.Role(side)} has {prepared.Count} prepared transaction(s): {string.Join(", ", prepared.Take(5))}; they were neither committed nor replicated, and no client could commit them on a fenced side",
                $"have their transaction manager COMMIT PREPARED or ROLLBACK PREPARED them on {LinkSessions.Role(side)}, then switch over again");
        }
    }

    /// <summary>Prepared (two-phase) transactions on the server, as "gid (database, owner)".</summary>
    public static async Task<List<string>> PreparedTransactionsAsync(NpgsqlConnection conn, CancellationToken cancellationToken) =>
        await conn.QueryAsync(PreparedTransactionsSql, r => r.GetString(0), cancellationToken);

    private const string PreparedTransactionsSql = "SELECT format('%s (%s, %s)', gid, database, owner) FROM pg_prepared_xacts ORDER BY prepared";
}
