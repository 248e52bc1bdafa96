using MySqlConnector;
using Teal.Core.Engines;
using Teal.MySql.Connections;

namespace Teal.MySql.Replication;

/// <summary>
/// The fence: a side refuses writes from every session but Teal's (and green's replication
/// applier). MariaDB has no <c>super_read_only</c>, and its <c>read_only</c> lets accounts with
/// SUPER (which in 10.5–10.11 implies READ ONLY ADMIN) or READ ONLY ADMIN write. So a fence is:
/// <list type="number">
/// <item><c>read_only = ON</c>: every other account's statements and commits are refused from
/// now on, in sessions opened before or after (an open transaction's COMMIT fails too);</item>
/// <item>the event scheduler off: events run as their definer, who may hold SUPER;</item>
/// <item>every account that can write through <c>read_only</c> (SUPER or READ ONLY ADMIN,
/// directly or through a role), except Teal's own, is locked (<c>ACCOUNT LOCK</c>: no new
/// logins), then its sessions are killed — a SUPER session connected before the fence cannot
/// write after it.</item>
/// </list>
/// Everything runs unlogged (<c>sql_log_bin=0</c>): a lock on blue must not replicate to green.
/// What was changed is recorded on the server (<c>teal.locked_accounts</c>, <c>teal.settings</c>),
/// so an unfence — by this process, after a restart, or by <c>teal instance unfence</c> — puts
/// back exactly that and leaves accounts the operator had locked locked.
/// </summary>
internal sealed class Fencing(LinkSessions sessions)
{
    private static readonly string LockedAccounts = Sql.Table(TealObjects.FenceSchema, "locked_accounts");
    private static readonly string Settings = Sql.Table(TealObjects.FenceSchema, "settings");

    /// <summary>Sessions that are the server's own, never drained or killed.</summary>
    public static readonly string[] SystemUsers = ["system user", "event_scheduler", "unauthenticated user", "DELAYED"];

    public async Task FenceAsync(Side side, CancellationToken cancellationToken)
    {
        await using var connection = await sessions.OpenAsync(side, cancellationToken);
        // A switchover's write pause lasts as long as the fence, so it goes in two round trips
        // (batches) rather than one per statement. First, unlogged, what every non-privileged
        // session obeys at once: the previous values are kept only by the first fence (a
        // repeated fence must not record its own ON as "before"), then read_only goes on; and
        // which accounts it does not stop.
        var first = await Sql.ResultSetsAsync(
            connection,
            $"""
            SET SESSION sql_log_bin = 0;
            SELECT @@global.event_scheduler AS scheduler;
            {TealObjects.CreateFenceTablesSql};
            INSERT IGNORE INTO {Settings} (name, value) SELECT 'read_only', IF(@@global.read_only, 'ON', 'OFF');
            INSERT IGNORE INTO {Settings} (name, value) SELECT 'event_scheduler', @@global.event_scheduler;
            SET GLOBAL read_only = ON;
            {PrivilegedAccountsSql}
            """,
            cancellationToken);
        var scheduler = first[0][0]["scheduler"];
        var accounts = first[1].Select(r => (User: r["User"]!, Host: r["Host"]!)).ToList();

        // Then those accounts: locked first (no new logins), then their sessions ended, so none
        // can come back between the two. The event scheduler goes off in the same batch: events
        // run as their definer, who may hold SUPER. The batch ends with the sessions to end.
        var batch = new System.Text.StringBuilder();
        if (!string.Equals(scheduler, "DISABLED", StringComparison.OrdinalIgnoreCase))
        {
            batch.Append("SET GLOBAL event_scheduler = OFF;\n");
        }

        foreach (var (user, host) in accounts)
        {
            batch.Append($"INSERT IGNORE INTO {LockedAccounts} (user, host) VALUES ({Sql.Literal(user)}, {Sql.Literal(host)});\n");
            batch.Append($"ALTER USER {Sql.Account(user, host)} ACCOUNT LOCK;\n");
        }

        batch.Append($"{ClientSessionsSql} AND BINARY USER IN (SELECT BINARY user FROM {LockedAccounts})");
        var locked = (await Sql.ResultSetsAsync(connection, batch.ToString(), cancellationToken))[0];
        foreach (var session in ClientSessions(locked))
        {
            await KillOneAsync(connection, session.Id, cancellationToken);
        }
    }

    public async Task UnfenceAsync(Side side, CancellationToken cancellationToken)
    {
        // LiftAsync makes its session unlogged in its first round trip.
        await using var connection = await sessions.OpenAsync(side, cancellationToken);
        await LiftAsync(connection, cancellationToken);
    }

    /// <summary>
    /// Gives back exactly what the fence recorded on this server (locked accounts, read_only, the
    /// event scheduler) on a session that does not write to the binlog. Returns the accounts unlocked.
    /// </summary>
    /// <remarks>
    /// Opening green is inside the switchover's write pause: two or three round trips, whatever
    /// the number of accounts (the changes themselves go in one batch). <paramref name="before"/>:
    /// statements returning no rows, run first in the same round trip (replication's end).
    /// </remarks>
    public static async Task<IReadOnlyList<string>> LiftAsync(MySqlConnection connection, CancellationToken cancellationToken, string before = "")
    {
        // What the fence recorded, read in the round trip that makes the session unlogged.
        var state = await Sql.ResultSetsAsync(
            connection,
            $"""
            {before}
            SET SESSION sql_log_bin = 0;
            {TealObjects.CreateFenceTablesSql};
            SELECT user, host FROM {LockedAccounts};
            SELECT name, value FROM {Settings}
            """,
            cancellationToken);
        var recorded = state[0].Select(r => (User: r["user"]!, Host: r["host"]!)).ToList();
        var batch = new System.Text.StringBuilder();
        var unlocked = new List<string>();
        if (recorded.Count > 0)
        {
            // The account may have been dropped meanwhile: unlock those that still exist. Given as
            // parameters, the names compare in mysql.global_priv's own collation.
            var pairs = recorded.Select((a, i) => ($"(@u{i}, @h{i})", a)).ToList();
            var parameters = recorded.SelectMany((a, i) => new (string, object?)[] { ($"@u{i}", a.User), ($"@h{i}", a.Host) }).ToArray();
            var existing = (await Sql.RowsAsync(connection, $"SELECT User, Host FROM mysql.global_priv WHERE (User, Host) IN ({string.Join(", ", pairs.Select(p => p.Item1))})", cancellationToken, parameters))
                .Select(r => (User: r["User"]!, Host: r["Host"]!))
                .ToHashSet();
            foreach (var (user, host) in recorded)
            {
                if (existing.Contains((user, host)))
                {
                    batch.Append($"ALTER USER {Sql.Account(user, host)} ACCOUNT UNLOCK;\n");
                    unlocked.Add(Sql.Account(user, host));
                }

                batch.Append($"DELETE FROM {LockedAccounts} WHERE user = {Sql.Literal(user)} AND host = {Sql.Literal(host)};\n");
            }
        }

        // Settings go back to what they were before the first fence; a side never fenced by Teal keeps its own.
        var settings = state[1].ToDictionary(r => r["name"]!, r => r["value"]!);
        if (settings.TryGetValue("event_scheduler", out var scheduler) && !scheduler.Equals("DISABLED", StringComparison.OrdinalIgnoreCase))
        {
            batch.Append($"SET GLOBAL event_scheduler = {(scheduler.Equals("ON", StringComparison.OrdinalIgnoreCase) ? "ON" : "OFF")};\n");
        }

        if (settings.TryGetValue("read_only", out var readOnly))
        {
            batch.Append($"SET GLOBAL read_only = {(readOnly.Equals("ON", StringComparison.OrdinalIgnoreCase) ? "ON" : "OFF")};\n");
        }

        batch.Append($"DELETE FROM {Settings} WHERE name IN ('read_only', 'event_scheduler')");
        await Sql.ExecuteAsync(connection, batch.ToString(), cancellationToken);
        return unlocked;
    }

    /// <summary>
    /// Read-only sessions' open transactions cannot commit any more; they get the budget to end
    /// (roll back or disconnect), then their sessions are killed. Teal's own sessions, the
    /// server's threads and replication (binlog dump) are left alone.
    /// </summary>
    public async Task<DrainResult> DrainAsync(Side side, TimeSpan budget, CancellationToken cancellationToken)
    {
        await using var connection = await sessions.OpenAsync(side, cancellationToken);
        var deadline = DateTime.UtcNow + budget;
        var first = await OpenTransactionsAsync(connection, cancellationToken);
        var open = first;
        while (open.Count > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(20), cancellationToken);
            open = await OpenTransactionsAsync(connection, cancellationToken);
        }

        var killed = 0;
        foreach (var id in open)
        {
            killed += await KillOneAsync(connection, id, cancellationToken) ? 1 : 0;
        }

        return new DrainResult(first.Count - open.Count, killed);
    }

    /// <summary>Whether a side is fenced now (read_only on).</summary>
    public async Task<bool> IsFencedAsync(Side side, CancellationToken cancellationToken)
    {
        await using var connection = await sessions.OpenAsync(side, cancellationToken);
        return await Sql.VariableAsync(connection, "read_only", cancellationToken) == "ON";
    }

    /// <summary>
    /// The process list without this session and Teal's account (compared as bytes: account
    /// names are case-sensitive); <see cref="ClientSessions"/> drops the server's own threads.
    /// </summary>
    private const string ClientSessionsSql =
        "SELECT ID, USER, HOST, COMMAND, TIME, INFO FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND BINARY USER <> BINARY SUBSTRING_INDEX(CURRENT_USER(), '@', 1)";

    /// <summary>Client sessions: not Teal's account, not the server's threads, not replication.</summary>
    public static async Task<List<SessionInfo>> ClientSessionsAsync(MySqlConnection connection, CancellationToken cancellationToken) =>
        ClientSessions(await Sql.RowsAsync(connection, ClientSessionsSql, cancellationToken));

    private static List<SessionInfo> ClientSessions(IEnumerable<Dictionary<string, string?>> rows) =>
        rows
            .Select(r => new SessionInfo(long.Parse(r["ID"]!, System.Globalization.CultureInfo.InvariantCulture), r["USER"] ?? string.Empty, r["HOST"] ?? string.Empty, r["COMMAND"] ?? string.Empty, long.TryParse(r["TIME"], out var t) ? t : 0, r["INFO"]))
            .Where(s => !SystemUsers.Contains(s.User, StringComparer.Ordinal) && s.Command is not ("Binlog Dump" or "Daemon" or "Slave_IO" or "Slave_SQL" or "Slave_worker"))
            .ToList();

    private static async Task<List<long>> OpenTransactionsAsync(MySqlConnection connection, CancellationToken cancellationToken)
    {
        var sets = await Sql.ResultSetsAsync(connection, $"{ClientSessionsSql}; SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX", cancellationToken);
        var clients = ClientSessions(sets[0]).Select(s => s.Id).ToHashSet();
        return sets[1].Select(r => long.Parse(r["trx_mysql_thread_id"]!, System.Globalization.CultureInfo.InvariantCulture)).Where(clients.Contains).ToList();
    }

    private static async Task<bool> KillOneAsync(MySqlConnection connection, long id, CancellationToken cancellationToken)
    {
        try
        {
            await Sql.ExecuteAsync(connection, $"KILL CONNECTION {id.ToString(System.Globalization.CultureInfo.InvariantCulture)}", cancellationToken);
            return true;
        }
        catch (MySqlException ex) when (ex.ErrorCode == MySqlErrorCode.NoSuchThread)
        {
            // It ended by itself meanwhile.
            return false;
        }
    }

    /// <summary>
    /// Accounts that can write through read_only — SUPER or READ ONLY ADMIN granted directly or
    /// through a role — other than Teal's own, not already locked, and not roles themselves.
    /// </summary>
    private const string PrivilegedAccountsSql =
        """
        WITH privileged AS (
            -- Granted directly (USER_PRIVILEGES) or held by a role: roles are not in
            -- USER_PRIVILEGES, so their access bits are read (SUPER = 1<<15, READ_ONLY ADMIN = 1<<33 in 10.5+).
            SELECT TRIM(BOTH '''' FROM SUBSTRING_INDEX(GRANTEE, '@', 1)) AS name,
                   TRIM(BOTH '''' FROM SUBSTRING(GRANTEE, LOCATE('@', GRANTEE) + 1)) AS host
            FROM information_schema.USER_PRIVILEGES
            WHERE PRIVILEGE_TYPE IN ('SUPER', 'READ_ONLY ADMIN', 'READ ONLY ADMIN')
            UNION
            SELECT User, Host FROM mysql.global_priv
            WHERE (CAST(COALESCE(JSON_VALUE(Priv, '$.access'), '0') AS UNSIGNED) & (32768 | 8589934592)) <> 0
        ),
        through_roles AS (
            SELECT m.User AS name, m.Host AS host FROM mysql.roles_mapping m JOIN privileged p ON p.name = m.Role AND p.host = ''
        )
        SELECT g.User, g.Host
        FROM mysql.global_priv g
        WHERE (g.User, g.Host) IN (SELECT name, host FROM privileged UNION SELECT name, host FROM through_roles)
          AND CONCAT(g.User, '@', g.Host) <> CURRENT_USER()
          AND COALESCE(JSON_VALUE(g.Priv, '$.account_locked'), 'false') NOT IN ('true', '1')
          AND COALESCE(JSON_VALUE(g.Priv, '$.is_role'), 'false') NOT IN ('true', '1')
          AND g.User <> ''
        """;
}

/// <summary>One row of the process list.</summary>
internal sealed record SessionInfo(long Id, string User, string Host, string Command, long Seconds, string? Info);
