using System.Text;
using System.Text.RegularExpressions;
using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Processes;
using Teal.Postgres.Engines;

namespace Teal.Postgres.Replication;

/// <summary>
/// Copies blue's schema (and optionally its roles) to green with pg_dump and psql. The dump is
/// small (schema only), so it is captured and replayed rather than piped. Passwords reach the
/// tools through PGPASSWORD, never argv (which any local user can read in /proc).
/// </summary>
internal sealed partial class SchemaCopy(LinkSessions sessions, PostgresEngineCatalog catalog)
{
    public async Task CopyAsync(CancellationToken cancellationToken)
    {
        var spec = sessions.Spec;
        await CreateDatabaseAsync(cancellationToken);
        if (spec.CopyRoles)
        {
            await CopyRolesAsync(cancellationToken);
        }

        await using (var green = await sessions.OpenAsync(Side.Green, cancellationToken))
        {
            // Idempotent on retry: a schema already there (from an earlier attempt) is kept.
            if (await UserRelationCountAsync(green, cancellationToken) > 0)
            {
                return;
            }
        }

        var dump = await DumpAsync(["--schema-only", "--no-publications", "--no-subscriptions", "--exclude-schema=teal"], cancellationToken);
        await RestoreAsync(WithoutTealEventTriggers(dump), singleTransaction: true, cancellationToken);
    }

    /// <summary>
    /// The dump without Teal's DDL-capture event triggers. Event triggers belong to no schema,
    /// so <c>--exclude-schema=teal</c> leaves them in while it drops the function they run: a
    /// blue that holds another deployment's triggers (a live one on another green, or one whose
    /// cleanup could not reach blue) made the restore fail with <c>schema "teal" does not exist</c>.
    /// Green gets its own triggers from its own deployment, never blue's.
    /// </summary>
    internal static string WithoutTealEventTriggers(string dump)
    {
        var lines = dump.Split('\n');
        var dropped = new HashSet<string>(StringComparer.Ordinal);
        var kept = new StringBuilder(dump.Length);
        for (var i = 0; i < lines.Length; i++)
        {
            var create = CreateEventTrigger().Match(lines[i]);
            if (create.Success)
            {
                // The statement runs up to the line ending in ';' (pg_dump puts EXECUTE on the next line).
                var end = i;
                while (end < lines.Length - 1 && !lines[end].TrimEnd().EndsWith(';'))
                {
                    end++;
                }

                var statement = string.Join('\n', lines[i..(end + 1)]);
                if (TealFunctionCall().IsMatch(statement))
                {
                    dropped.Add(create.Groups[1].Value);
                    i = end;
                    continue;
                }
            }
            else if (OtherEventTriggerStatement().Match(lines[i]) is { Success: true } other && dropped.Contains(other.Groups[1].Value))
            {
                continue;
            }

            kept.Append(lines[i]);
            if (i < lines.Length - 1)
            {
                kept.Append('\n');
            }
        }

        return kept.ToString();
    }

    /// <summary>Creates tables missing on green from blue's definitions (pg_dump -t).</summary>
    public async Task CopyTablesAsync(IReadOnlyList<(string Schema, string Table)> tables, CancellationToken cancellationToken)
    {
        if (tables.Count == 0)
        {
            return;
        }

        var args = new List<string> { "--schema-only", "--no-publications", "--no-subscriptions" };
        foreach (var (schema, table) in tables)
        {
            // pg_dump patterns: double quotes make the name literal (no wildcards, case kept).
            args.Add("--table=" + Sql.Qualified(schema, table));
        }

        var dump = await DumpAsync(args, cancellationToken);
        await RestoreAsync(dump, singleTransaction: true, cancellationToken);
    }

    /// <summary>Creates schemas missing on green with everything in them, from blue's definitions (pg_dump -n).</summary>
    public async Task CopySchemasAsync(IReadOnlyList<string> schemas, CancellationToken cancellationToken)
    {
        if (schemas.Count == 0)
        {
            return;
        }

        var args = new List<string> { "--schema-only", "--no-publications", "--no-subscriptions" };
        args.AddRange(schemas.Select(s => "--schema=" + Sql.Ident(s)));
        var dump = await DumpAsync(args, cancellationToken);
        await RestoreAsync(dump, singleTransaction: true, cancellationToken);
    }

    /// <summary>Relations outside the system schemas and Teal's: the emptiness test for green.</summary>
    public static async Task<long> UserRelationCountAsync(NpgsqlConnection connection, CancellationToken cancellationToken) =>
        await connection.ScalarAsync<long>(
            """
            SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
              AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'teal') AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
            """,
            cancellationToken);

    private async Task CreateDatabaseAsync(CancellationToken cancellationToken)
    {
        var database = sessions.Spec.Green.Database;
        await using var admin = await sessions.OpenGreenAdminAsync(cancellationToken);
        if (await admin.ScalarAsync<bool>("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", cancellationToken, database))
        {
            return;
        }

        string encoding;
        await using (var blue = await sessions.OpenAsync(Side.Blue, cancellationToken))
        {
            encoding = (await blue.ScalarAsync<string>("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()", cancellationToken))!;
        }

        // template0: green's template1 may hold objects of its own; the encoding must be blue's
        // or rows may not convert.
        // Owned by green's registered user, as it was before Teal logged in as its own role.
        await admin.ExecuteAsync($"CREATE DATABASE {Sql.Ident(database)} OWNER {Sql.Ident(sessions.Registered(Side.Green).User)} TEMPLATE template0 ENCODING {Sql.Literal(encoding)}", cancellationToken);
    }

    /// <summary>
    /// How pg_dump and pg_dumpall log in to blue: as Teal's own role, which a fenced blue still
    /// admits. A session of the link opened first creates that role on a server that does not
    /// have it yet (the tools cannot: they only fail to authenticate).
    /// </summary>
    private async Task<ConnectionInfo> BlueToolLoginAsync(CancellationToken cancellationToken)
    {
        await using (await sessions.OpenAsync(Side.Blue, cancellationToken))
        {
        }

        return sessions.Connection(Side.Blue);
    }

    /// <summary>
    /// Replays <c>pg_dumpall --roles-only</c> from blue, leaving out roles green already has
    /// (its superuser above all: its password must not change) and tolerating statements that
    /// fail (grants by roles that do not exist on green).
    /// </summary>
    private async Task CopyRolesAsync(CancellationToken cancellationToken)
    {
        HashSet<string> existing;
        await using (var green = await sessions.OpenGreenAdminAsync(cancellationToken))
        {
            existing = [.. await green.QueryAsync("SELECT rolname::text FROM pg_roles", r => r.GetString(0), cancellationToken)];
        }

        existing.Add(sessions.Spec.Blue.User);
        var tools = await catalog.ClientToolsAsync(cancellationToken);
        var blue = await BlueToolLoginAsync(cancellationToken);
        var result = await ProcessRunner.RunAsync(ToolSpec(Path.Combine(tools.BinDirectory, "pg_dumpall"), ["--roles-only", "--no-comments"], blue, "--database"), cancellationToken);
        if (!result.Succeeded)
        {
            throw new TealException("schema.roles-dump-failed", $"pg_dumpall --roles-only on blue failed: {result.Tail()}", "check that blue's user is a superuser (it reads pg_authid)");
        }

        var script = new StringBuilder();
        foreach (var line in result.StandardOutput.Split('\n'))
        {
            var m = RoleStatement().Match(line);
            // Teal's own roles (its login, the fence's records) belong to each server, not to the copy.
            if (m.Success && (existing.Contains(Unquote(m.Groups[1].Value)) || Fencing.IsTealRole(Unquote(m.Groups[1].Value))))
            {
                continue;
            }

            script.Append(line).Append('\n');
        }

        var restore = await RunPsqlAsync(script.ToString(), stopOnError: false, singleTransaction: false, cancellationToken);
        if (!restore.Succeeded)
        {
            throw new TealException("schema.roles-restore-failed", $"creating blue's roles on green failed: {restore.Tail()}", "check green's user is a superuser (or has CREATEROLE)");
        }
    }

    private async Task<string> DumpAsync(IReadOnlyList<string> options, CancellationToken cancellationToken)
    {
        var tools = await catalog.ClientToolsAsync(cancellationToken);
        var blue = await BlueToolLoginAsync(cancellationToken);
        var result = await ProcessRunner.RunAsync(ToolSpec(Path.Combine(tools.BinDirectory, "pg_dump"), options, blue, null) with { Timeout = TimeSpan.FromMinutes(30) }, cancellationToken);
        if (!result.Succeeded)
        {
            throw new TealException(
                "schema.dump-failed",
                $"pg_dump of blue's schema failed: {result.Tail()}",
                $"pg_dump {tools.Version} must be at least blue's major version; check blue's user can read every schema");
        }

        return result.StandardOutput;
    }

    private async Task RestoreAsync(string script, bool singleTransaction, CancellationToken cancellationToken)
    {
        var result = await RunPsqlAsync(script, stopOnError: true, singleTransaction, cancellationToken);
        if (!result.Succeeded)
        {
            throw new TealException(
                "schema.restore-failed",
                $"loading blue's schema into green failed: {result.Tail()}",
                "a role or extension blue's schema needs may be missing on green: create it there (or enable role copy) and retry");
        }
    }

    private async Task<ProcessResult> RunPsqlAsync(string script, bool stopOnError, bool singleTransaction, CancellationToken cancellationToken)
    {
        var tools = await catalog.ClientToolsAsync(cancellationToken);
        var green = sessions.Connection(Side.Green);
        var args = new List<string> { "-X", "-q", "-v", $"ON_ERROR_STOP={(stopOnError ? 1 : 0)}" };
        if (singleTransaction)
        {
            args.Add("--single-transaction");
        }

        return await ProcessRunner.RunAsync(
            ToolSpec(Path.Combine(tools.BinDirectory, "psql"), args, green, "--dbname") with { StandardInput = script, Timeout = TimeSpan.FromMinutes(30) },
            cancellationToken);
    }

    /// <summary>
    /// How a client tool is run against one side: where to connect in its arguments, the
    /// password in its environment only (argv is readable by every local user).
    /// </summary>
    internal static ProcessSpec ToolSpec(string program, IReadOnlyList<string> arguments, ConnectionInfo connection, string? databaseOption) =>
        new(program, [.. arguments, .. ConnectArgs(connection, databaseOption)]) { Environment = ToolEnvironment(connection) };

    private static List<string> ConnectArgs(ConnectionInfo connection, string? databaseOption) =>
    [
        "--host", connection.Host,
        "--port", connection.Port.ToString(System.Globalization.CultureInfo.InvariantCulture),
        "--username", connection.User,
        "--no-password",
        databaseOption ?? "--dbname", connection.Database,
    ];

    /// <summary>
    /// Password through the environment; PGOPTIONS lets the session write through a fence, and
    /// the application name marks it as Teal's (the DDL trigger and the drain skip it).
    /// </summary>
    private static Dictionary<string, string> ToolEnvironment(ConnectionInfo connection)
    {
        var env = new Dictionary<string, string>
        {
            ["PGAPPNAME"] = Connections.PostgresConnections.ApplicationName,
            ["PGOPTIONS"] = "-c default_transaction_read_only=off",
            ["PGCONNECT_TIMEOUT"] = "10",
        };
        if (connection.Password is not null)
        {
            env["PGPASSWORD"] = connection.Password;
        }

        if (connection.Options.TryGetValue("SSL Mode", out var ssl))
        {
            env["PGSSLMODE"] = ssl.ToLowerInvariant() switch { "verifyfull" => "verify-full", "verifyca" => "verify-ca", var s => s };
        }

        return env;
    }

    private static string Unquote(string name) =>
        name.StartsWith('"') ? name[1..^1].Replace("\"\"", "\"", StringComparison.Ordinal) : name;

    [GeneratedRegex("""^CREATE EVENT TRIGGER ("(?:[^"]|"")+"|[^\s;]+)""")]
    private static partial Regex CreateEventTrigger();

    [GeneratedRegex("""^(?:ALTER|COMMENT ON) EVENT TRIGGER ("(?:[^"]|"")+"|[^\s;]+)""")]
    private static partial Regex OtherEventTriggerStatement();

    [GeneratedRegex("""EXECUTE (?:FUNCTION|PROCEDURE) (?:"teal"|teal)\.""")]
    private static partial Regex TealFunctionCall();

    [GeneratedRegex("""^(?:CREATE|ALTER) ROLE ("(?:[^"]|"")+"|[^\s;]+)""")]
    private static partial Regex RoleStatement();
}
