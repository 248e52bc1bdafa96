using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Guardrails;

namespace Teal.Postgres.Replication;

/// <summary>
/// The same logins on both sides (issue 11, point 7): every role that logs in to blue logs in
/// to green with the same password after the switchover. Logical replication carries no roles,
/// and a password changed on blue after create would otherwise stay old on green, so right
/// before green opens each role's verifier (SCRAM or md5, as stored in pg_authid) is copied from
/// blue to green's role of the same name. Green's registered user is left alone unless it has
/// blue's password already (a managed green's superuser is given blue's at creation): Teal holds
/// that user's password for green and must not lose it.
/// </summary>
internal sealed class Logins(LinkSessions sessions)
{
    /// <summary>
    /// Roles that log in to blue with a password: those with LOGIN and those a fence took it from
    /// (blue is fenced when the switchover copies them). Teal's own roles are not the application's.
    /// </summary>
    private const string BlueLoginsSql = $"""
        SELECT a.rolname::text, a.rolpassword
        FROM pg_authid a
        WHERE a.rolpassword IS NOT NULL
          AND a.rolname <> '{LinkSessions.ControlRole}'
          AND (a.rolcanlogin OR EXISTS (
                SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                WHERE g.rolname = '{Fencing.LoginsRole}' AND m.member = a.oid))
        ORDER BY 1
        """;

    /// <summary>Copies blue's password verifiers onto green; returns the roles that will not log in to green as they do to blue.</summary>
    public async Task<IReadOnlyList<string>> SyncAsync(CancellationToken cancellationToken)
    {
        var (blue, green) = await ReadAsync(cancellationToken);
        var statements = new List<string>();
        foreach (var (role, verifier) in blue)
        {
            if (!green.TryGetValue(role, out var current) || current == verifier || !MayChange(role))
            {
                continue;
            }

            statements.Add($"ALTER ROLE {Sql.Ident(role)} PASSWORD {Sql.Literal(verifier)}");
        }

        if (statements.Count > 0)
        {
            await using var conn = await sessions.OpenAsync(Side.Green, cancellationToken);
            // The verifiers are not passwords, but keep them out of green's log all the same.
            await conn.ExecuteAsync("SET log_statement = 'none'; SET log_min_error_statement = 'panic'", cancellationToken);
            await using var batch = conn.CreateBatch();
            foreach (var s in statements)
            {
                batch.BatchCommands.Add(new NpgsqlBatchCommand(s));
            }

            await batch.ExecuteNonQueryAsync(cancellationToken);
            await conn.ExecuteAsync("RESET log_statement; RESET log_min_error_statement", cancellationToken);
        }

        return Problems(blue, green);
    }

    /// <summary>The guardrail: which roles that log in to blue will not log in to green after the switchover.</summary>
    public async Task<CheckResult> CheckAsync(CancellationToken cancellationToken)
    {
        var (blue, green) = await ReadAsync(cancellationToken);
        var problems = Problems(blue, green);
        return problems.Count == 0
            ? CheckResult.Pass("green.logins", $"the {blue.Count} role(s) that log in to blue with a password will log in to green with the same one")
            // A warning, not a refusal: an external green may keep its own superuser on purpose.
            : CheckResult.Warn(
                "green.logins",
                $"{problems.Count} role(s) that log in to blue will not log in to green as they do to blue: {string.Join("; ", problems.Take(10))}",
                "create the missing roles on green (`teal instance url GREEN --as-teal`), or give green's own user blue's password; the switchover copies every other role's password from blue");
    }

    private bool MayChange(string role) =>
        role != sessions.Registered(Side.Green).User || sessions.Registered(Side.Green).Password == sessions.Registered(Side.Blue).Password;

    private List<string> Problems(Dictionary<string, string> blue, Dictionary<string, string> green)
    {
        var problems = new List<string>();
        foreach (var role in blue.Keys)
        {
            if (!green.ContainsKey(role))
            {
                problems.Add($"{role} (missing on green)");
            }
            else if (!MayChange(role))
            {
                problems.Add($"{role} (green's own user: keeps green's password)");
            }
        }

        return problems;
    }

    private async Task<(Dictionary<string, string> Blue, Dictionary<string, string> Green)> ReadAsync(CancellationToken cancellationToken)
    {
        async Task<Dictionary<string, string>> ReadSide(Side side, string sql)
        {
            await using var conn = await sessions.OpenAsync(side, cancellationToken);
            var rows = await conn.QueryAsync(sql, r => (r.GetString(0), r.IsDBNull(1) ? string.Empty : r.GetString(1)), cancellationToken);
            return rows.ToDictionary(r => r.Item1, r => r.Item2);
        }

        var blue = ReadSide(Side.Blue, BlueLoginsSql);
        var green = ReadSide(Side.Green, "SELECT rolname::text, rolpassword FROM pg_authid");
        await Task.WhenAll(blue, green);
        return (await blue, await green);
    }
}
