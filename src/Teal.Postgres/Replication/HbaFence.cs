using System.Text;
using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Postgres.Instances;

namespace Teal.Postgres.Replication;

/// <summary>
/// The hard layer of the fence on a server Teal provisioned, blue or green (ARCHITECTURE.md, "The
/// fence"): its own pg_hba.conf admits only Teal's login, instead of taking LOGIN from every role.
/// pg_hba.conf is a file of that one server, so its physical readers (which replay every catalog
/// change, NOLOGIN included) keep admitting the application's roles: a canary sends reads to
/// green's readers before the switchover, and a switchback leaves the readers of the side it
/// fences readable, while that side's primary refuses every client at connection start,
/// superusers included, as NOLOGIN does.
/// <para>
/// The file is read and written through Teal's superuser session (<c>pg_read_binary_file</c>,
/// <c>lo_export</c>), so it works wherever Teal runs. The server's own rules are saved beside it
/// (<see cref="SavedSuffix"/>) before the fenced file replaces them, and the fenced file begins with
/// <see cref="Marker"/>: the file itself is the record, so a crash at any point leaves either the
/// original, or the fenced file with the original saved.
/// </para>
/// </summary>
internal static class HbaFence
{
    /// <summary>The first line of a fenced pg_hba.conf.</summary>
    public const string Marker = "# teal fence:";

    /// <summary>The server's own pg_hba.conf while fenced: <c>pg_hba.conf</c> + this.</summary>
    public const string SavedSuffix = ".teal-original";

    // The server's pg_hba.conf and its saved rules, as SQL expressions for the server's own paths.
    private const string HbaPath = "current_setting('hba_file')";
    private const string SavedPath = HbaPath + " || '" + SavedSuffix + "'";

    private static readonly HashSet<string> RuleTypes = new(StringComparer.Ordinal)
    {
        "local", "host", "hostssl", "hostnossl", "hostgssenc", "hostnogssenc",
    };

    /// <summary>Whether the pg_hba.conf on disk is Teal's fenced one.</summary>
    public static async Task<bool> IsClosedAsync(NpgsqlConnection conn, CancellationToken cancellationToken) =>
        IsFenced(await ReadAsync(conn, HbaPath, cancellationToken));

    public static bool IsFenced(string content) => content.StartsWith(Marker, StringComparison.Ordinal);

    /// <summary>
    /// Fences the server's pg_hba.conf: saves it (unless it is fenced already, whose original is
    /// saved), writes the fenced file and checks the server parses it; returns the fenced file.
    /// <paramref name="prelude"/> runs first, in the same round trip as the file's read (the
    /// fence's holder role). The caller reloads, then confirms Teal still logs in with a new
    /// session, and opens the file again if not.
    /// </summary>
    /// <remarks>
    /// Three round trips (read, save, write and check) where there were fourteen: this runs inside
    /// the write pause, where each one waits for a server busy with the clients' last transactions.
    /// </remarks>
    public static async Task<string> CloseAsync(NpgsqlConnection conn, string side, string prelude, CancellationToken cancellationToken)
    {
        await using var read = conn.CreateBatch();
        read.BatchCommands.Add(new NpgsqlBatchCommand(prelude));
        read.BatchCommands.Add(new NpgsqlBatchCommand($"SELECT pg_read_binary_file({HbaPath}), {MapsTealSql}")
        {
            Parameters = { new NpgsqlParameter { Value = LocalLogin.OsUser } },
        });
        string current;
        bool mapsTeal;
        // The prelude returns no result set: the reader starts on the read's.
        await using (var reader = await read.ExecuteReaderAsync(cancellationToken))
        {
            if (!await reader.ReadAsync(cancellationToken))
            {
                throw new InvalidOperationException("reading pg_hba.conf returned no row");
            }

            current = Encoding.UTF8.GetString((byte[])reader.GetValue(0));
            mapsTeal = reader.GetBoolean(1);
        }

        if (IsFenced(current))
        {
            return current;
        }

        // Saved first: a crash after it leaves the original both in place and saved.
        await WriteAsync(conn, SavedPath, current, cancellationToken);
        var fenced = Fenced(current, mapsTeal);
        var errors = await WriteAsync(
            conn,
            HbaPath,
            fenced,
            cancellationToken,
            then: "SELECT format('line %s: %s', line_number, error) FROM pg_hba_file_rules WHERE error IS NOT NULL ORDER BY line_number");
        if (errors.Count > 0)
        {
            await WriteAsync(conn, HbaPath, current, cancellationToken);
            throw new TealException("fence.hba-invalid", $"{side}: the fenced pg_hba.conf does not parse ({string.Join("; ", errors)}); its own file was put back", $"check {side}'s pg_hba.conf for rules this PostgreSQL version does not accept");
        }

        return fenced;
    }

    /// <summary>Puts the server's own pg_hba.conf back if it is fenced; returns whether it was. The caller reloads.</summary>
    public static async Task<bool> OpenAsync(NpgsqlConnection conn, CancellationToken cancellationToken)
    {
        // The saved file is read in the same round trip, only when the file on disk is fenced.
        var saved = await conn.ScalarAsync<byte[]>(
            $"""
            SELECT CASE WHEN position(convert_to('{Marker}', 'UTF8') IN f) = 1
                        THEN pg_read_binary_file({SavedPath}) END
            FROM pg_read_binary_file({HbaPath}) f
            """,
            cancellationToken);
        if (saved is null)
        {
            return false;
        }

        await WriteAsync(conn, HbaPath, Encoding.UTF8.GetString(saved), cancellationToken);
        return true;
    }

    /// <summary>
    /// The Unix socket where Teal's OS user logs in to <paramref name="side"/> as any role while
    /// it is fenced: null unless the fenced pg_hba.conf on disk has <see cref="LocalLogin.HbaRule"/>.
    /// </summary>
    public static async Task<string?> LocalLoginSocketAsync(LinkSessions sessions, Side side, CancellationToken cancellationToken)
    {
        await using var conn = await sessions.OpenAsync(side, cancellationToken);
        var found = await conn.QueryAsync(
            $"""
            SELECT current_setting('unix_socket_directories'), current_setting('port')::int
            WHERE EXISTS (SELECT 1 FROM pg_hba_file_rules
                          WHERE type = 'local' AND auth_method = 'peer' AND options @> ARRAY['map={LocalLogin.MapName}'] AND error IS NULL)
            """,
            r => LocalLogin.SocketPath(r.GetString(0), r.GetInt32(1)),
            cancellationToken);
        return found.Count == 1 ? found[0] : null;
    }

    /// <summary>
    /// On PostgreSQL 15, whose pg_ident.conf cannot map a user to every role in one line: maps
    /// Teal's OS user to each role that can log in now, one line each (<see cref="LocalLogin.WithRoleLines"/>),
    /// and reloads a fenced side when that changed the file. Called before a switchover's pause, never inside it;
    /// the lines only count where the fenced pg_hba.conf has <see cref="LocalLogin.HbaRule"/>. A
    /// server with no Unix socket, or whose file would not parse, is left as it is: its moved
    /// sessions log in once it opens.
    /// </summary>
    public static async Task MapRolesAsync(NpgsqlConnection conn, CancellationToken cancellationToken)
    {
        if (conn.PostgreSqlVersion.Major >= LocalLogin.AllRolesMajorVersion
            || await conn.ScalarAsync<string>("SELECT current_setting('unix_socket_directories')", cancellationToken) is not { Length: > 0 })
        {
            return;
        }

        var current = await ReadAsync(conn, "current_setting('ident_file')", cancellationToken);
        var roles = await conn.QueryAsync("SELECT rolname FROM pg_roles WHERE rolcanlogin", r => r.GetString(0), cancellationToken);
        var mapped = LocalLogin.WithRoleLines(current, roles);
        if (mapped == current)
        {
            return;
        }

        await WriteAsync(conn, "current_setting('ident_file')", mapped, cancellationToken);
        if (await conn.ScalarAsync<bool>("SELECT EXISTS (SELECT 1 FROM pg_ident_file_mappings WHERE error IS NOT NULL)", cancellationToken))
        {
            await WriteAsync(conn, "current_setting('ident_file')", current, cancellationToken);
            return;
        }

        if (await IsClosedAsync(conn, cancellationToken))
        {
            // Only a side fenced already needs the reload now (no client is on it); an open one
            // (production blue, just before the pause) reads the file with the fence's own reload.
            await conn.ExecuteAsync("SELECT pg_reload_conf()", cancellationToken);
        }
    }

    /// <summary>
    /// Whether the server lets Teal's OS user log in over its Unix socket (<see cref="LocalLogin"/>:
    /// Teal provisioned it with the map, or wrote a line per role, <see cref="MapRolesAsync"/>).
    /// </summary>
    // $1 is Teal's OS user.
    private const string MapsTealSql = $"""
        current_setting('unix_socket_directories') <> ''
           AND EXISTS (SELECT 1 FROM pg_ident_file_mappings
                       WHERE map_name = '{LocalLogin.MapName}' AND sys_name = $1 AND error IS NULL)
        """;

    /// <summary>
    /// The fenced file: the server's rules that match Teal's login (user <c>all</c> or
    /// <c>teal_control</c>), each narrowed to it, so Teal keeps exactly the access it had; with
    /// <paramref name="localLogin"/>, peer logins of Teal's own OS user over the Unix socket as
    /// any role (<see cref="LocalLogin"/>: Teal's proxy logs its moving sessions in there before
    /// the pause); then a reject for everyone else. Rules naming groups or patterns and include
    /// directives are left out (Teal's login is not in a group); <see cref="CloseAsync"/> confirms
    /// the login still works.
    /// </summary>
    public static string Fenced(string original, bool localLogin = false)
    {
        var text = new StringBuilder();
        text.Append(Marker).Append(" only ").Append(LinkSessions.ControlRole).Append(" may connect until the switchover opens this server.\n");
        text.Append("# This server's own rules are in pg_hba.conf").Append(SavedSuffix).Append("; Teal puts them back when it lifts the fence.\n");
        foreach (var line in Rules(original))
        {
            var tokens = Tokens(line);
            if (tokens.Count < 4 || !RuleTypes.Contains(tokens[0]))
            {
                continue;
            }

            var users = tokens[2].Split(',').Select(u => u.Trim('"')).ToList();
            if (!users.Contains("all") && !users.Contains(LinkSessions.ControlRole))
            {
                continue;
            }

            tokens[2] = LinkSessions.ControlRole;
            text.Append(string.Join(' ', tokens)).Append('\n');
        }

        if (localLogin)
        {
            text.Append(LocalLogin.HbaRule).Append('\n');
        }

        text.Append("local all all reject\n");
        text.Append("host all all all reject\n");
        return text.ToString();
    }

    /// <summary>The file's lines without comments, continuations joined (PostgreSQL 16+).</summary>
    private static IEnumerable<string> Rules(string content)
    {
        var pending = new StringBuilder();
        foreach (var raw in content.Split('\n'))
        {
            var line = StripComment(raw.TrimEnd('\r'));
            if (line.EndsWith('\\'))
            {
                pending.Append(line[..^1]).Append(' ');
                continue;
            }

            pending.Append(line);
            var joined = pending.ToString().Trim();
            pending.Clear();
            if (joined.Length > 0)
            {
                yield return joined;
            }
        }
    }

    private static string StripComment(string line)
    {
        var quoted = false;
        for (var i = 0; i < line.Length; i++)
        {
            if (line[i] == '"')
            {
                quoted = !quoted;
            }
            else if (line[i] == '#' && !quoted)
            {
                return line[..i];
            }
        }

        return line;
    }

    /// <summary>Whitespace-separated tokens; a double-quoted part keeps its spaces and its quotes.</summary>
    private static List<string> Tokens(string line)
    {
        var tokens = new List<string>();
        var current = new StringBuilder();
        var quoted = false;
        foreach (var c in line)
        {
            if (c == '"')
            {
                quoted = !quoted;
            }

            if (!quoted && char.IsWhiteSpace(c))
            {
                if (current.Length > 0)
                {
                    tokens.Add(current.ToString());
                    current.Clear();
                }

                continue;
            }

            current.Append(c);
        }

        if (current.Length > 0)
        {
            tokens.Add(current.ToString());
        }

        return tokens;
    }

    private static async Task<string> ReadAsync(NpgsqlConnection conn, string pathExpression, CancellationToken cancellationToken)
    {
        var bytes = await conn.ScalarAsync<byte[]>($"SELECT pg_read_binary_file({pathExpression})", cancellationToken)
            ?? throw new InvalidOperationException("pg_read_binary_file returned null");
        return Encoding.UTF8.GetString(bytes);
    }

    /// <summary>
    /// Writes a file as the server's OS user: a large object exported and unlinked in one
    /// transaction, so nothing of it stays in the database; one round trip, the statements
    /// pipelined in the implicit transaction of one Sync (a large object made by a statement is
    /// visible only to the next ones, so they are three, the object's id passed on in a setting
    /// local to the transaction). <paramref name="then"/>, a query of one text column, runs after
    /// the write in the same round trip (a check of the file written); its rows are returned.
    /// </summary>
    private static async Task<List<string>> WriteAsync(NpgsqlConnection conn, string pathExpression, string content, CancellationToken cancellationToken, string? then = null)
    {
        await using var batch = conn.CreateBatch();
        // The large object is the transaction's only write, and lo_export does not flush the file
        // either: its commit need not wait for the WAL flush (a disk write, inside the write pause
        // when green opens).
        batch.BatchCommands.Add(new NpgsqlBatchCommand("SELECT pg_catalog.set_config('synchronous_commit', 'off', true), pg_catalog.set_config('teal.file_object', pg_catalog.lo_from_bytea(0, $1)::text, true)")
        {
            Parameters = { new NpgsqlParameter { Value = Encoding.UTF8.GetBytes(content) } },
        });
        batch.BatchCommands.Add(new NpgsqlBatchCommand($"SELECT pg_catalog.lo_export(current_setting('teal.file_object')::oid, {pathExpression})"));
        batch.BatchCommands.Add(new NpgsqlBatchCommand("SELECT pg_catalog.lo_unlink(current_setting('teal.file_object')::oid)"));
        if (then is not null)
        {
            batch.BatchCommands.Add(new NpgsqlBatchCommand(then));
        }

        await using var reader = await batch.ExecuteReaderAsync(cancellationToken);
        var rows = new List<string>();
        // On the first statement's result: the check's is the fourth.
        for (var step = 0; step < 3; step++)
        {
            if (!await reader.NextResultAsync(cancellationToken))
            {
                return rows;
            }
        }

        while (await reader.ReadAsync(cancellationToken))
        {
            rows.Add(reader.GetString(0));
        }

        return rows;
    }
}
