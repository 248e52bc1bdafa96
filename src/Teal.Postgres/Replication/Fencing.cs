using System.Collections.Concurrent;
using System.Diagnostics;
using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Postgres.Connections;

namespace Teal.Postgres.Replication;

/// <summary>
/// The fence: <c>default_transaction_read_only=on</c> for the whole server through ALTER
/// SYSTEM and a reload. Every new transaction of every role starts read-only; sessions pick the
/// reload up before their next statement. Role and database settings outrank the server's
/// (pg_db_role_setting), so overrides to "off" are reset while fenced and restored on unfence.
/// Teal's sessions set the parameter at connection start, which outranks all of these, so
/// Teal still writes (heartbeat marker, sequences); so does logical replication's apply worker,
/// which does not go through the read-only check of the executor.
/// </summary>
internal sealed class Fencing(LinkSessions sessions, TimeProvider time)
{
    private const string Parameter = "default_transaction_read_only";

    /// <summary>Server time at which each side was last fenced (transactions older than it may write).</summary>
    private readonly ConcurrentDictionary<Side, DateTimeOffset> _fencedAt = new();

    public DateTimeOffset? FencedAt(Side side) => _fencedAt.TryGetValue(side, out var at) ? at : null;

    public async Task FenceAsync(Side side, CancellationToken cancellationToken)
    {
        await using var conn = await sessions.OpenAsync(side, cancellationToken);
        await ResetOverridesAsync(conn, cancellationToken);
        // ALTER SYSTEM refuses to run in a transaction block: its own round trip.
        await conn.ExecuteAsync($"ALTER SYSTEM SET {Parameter} = on", cancellationToken);
        var at = await conn.ScalarAsync<DateTime>("SELECT clock_timestamp() FROM pg_reload_conf()", cancellationToken);
        _fencedAt[side] = new DateTimeOffset(DateTime.SpecifyKind(at, DateTimeKind.Utc));
        await WaitUntilObservedAsync(side, expectReadOnly: true, cancellationToken);
    }

    public async Task UnfenceAsync(Side side, CancellationToken cancellationToken)
    {
        await using var conn = await sessions.OpenAsync(side, cancellationToken);
        await conn.ExecuteAsync($"ALTER SYSTEM RESET {Parameter}", cancellationToken);
        await conn.ExecuteAsync("SELECT pg_reload_conf()", cancellationToken);
        await RestoreOverridesAsync(conn, cancellationToken);
        _fencedAt.TryRemove(side, out _);
        await WaitUntilObservedAsync(side, expectReadOnly: false, cancellationToken);
    }

    /// <summary>
    /// pg_reload_conf() only signals the postmaster, which re-reads the configuration and then
    /// signals every backend in one pass; a backend applies the reload before its next command.
    /// So once an observer session (no override of the parameter) shows the new value, every
    /// backend has been signalled and applies it before its next statement, and every backend
    /// started from then on starts with it: the fence holds. The observer comes from a pool the
    /// switchover warmed before the pause, so this costs round trips, not connection setups.
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
        if (!await TealObjects.SchemaExistsAsync(conn, cancellationToken))
        {
            return;
        }

        var saved = await conn.QueryAsync(
            "SELECT database_name, role_name, value FROM teal.fence_overrides WHERE server_id = (SELECT system_identifier FROM pg_control_system())",
            r => (Database: r.GetString(0), Role: r.GetString(1), Value: r.GetString(2)),
            cancellationToken);
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
    /// may still write), then terminates those left when the budget is spent.
    /// </summary>
    public async Task<DrainResult> DrainAsync(Side side, TimeSpan budget, CancellationToken cancellationToken)
    {
        await using var conn = await sessions.OpenAsync(side, cancellationToken);
        var fencedAt = FencedAt(side) ?? time.GetUtcNow();
        var query = $"""
            SELECT pid FROM pg_stat_activity
            WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
              AND coalesce(application_name, '') <> '{PostgresConnections.ApplicationName}'
              AND xact_start IS NOT NULL AND xact_start <= $1
            """;
        var initial = await conn.QueryAsync(query, r => r.GetInt32(0), cancellationToken, fencedAt);
        var deadline = Stopwatch.GetTimestamp();
        var remaining = initial;
        while (remaining.Count > 0 && Stopwatch.GetElapsedTime(deadline) < budget)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(5), time, cancellationToken);
            remaining = await conn.QueryAsync(query, r => r.GetInt32(0), cancellationToken, fencedAt);
        }

        var pids = remaining.Intersect(initial).ToArray();
        if (pids.Length > 0)
        {
            await conn.ExecuteAsync("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) pid", cancellationToken, pids);
            // Wait (briefly) until they are gone, so the caller's next position read sees no late commit.
            for (var i = 0; i < 200; i++)
            {
                var alive = await conn.ScalarAsync<long>("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)", cancellationToken, pids);
                if (alive == 0)
                {
                    break;
                }

                await Task.Delay(TimeSpan.FromMilliseconds(5), time, cancellationToken);
            }
        }

        return new DrainResult(initial.Count - pids.Length, pids.Length);
    }
}
