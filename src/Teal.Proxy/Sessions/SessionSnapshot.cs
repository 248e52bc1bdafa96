using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Teal.Proxy.Protocol;

namespace Teal.Proxy.Sessions;

/// <summary>
/// A named prepared statement of the session, with its parameter types as the old server
/// resolved them: built-in types by OID (the same on every server), others by name, resolved
/// again on the new one.
/// </summary>
internal sealed record PreparedStatement(string Name, string Statement, bool FromSql, IReadOnlyList<string> ParameterTypes);

/// <summary>
/// The state of an idle session as its own server reports it, read once on the server it leaves.
/// Asking the server rather than replaying what the client sent is what makes a move exact: a
/// <c>SET</c> inside a rolled-back transaction is gone, a <c>RESET</c> is seen, a statement
/// deallocated by the driver is not prepared again.
/// </summary>
internal sealed record SessionSnapshot(
    IReadOnlyList<string> Blockers,
    IReadOnlyList<KeyValuePair<string, string>> Settings,
    IReadOnlyList<string> Channels,
    IReadOnlyList<PreparedStatement> Statements)
{
    /// <summary>
    /// The current values of the parameters a server reports to its client (ParameterStatus),
    /// on the server the session leaves: what the client last saw of each, since the server
    /// reports every change. Compared with the new server's, so the client learns what differs.
    /// </summary>
    public IReadOnlyDictionary<string, string> Reported { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// One simple query, run in the client's session between transactions. Catalog names are
    /// qualified because the session's <c>search_path</c> is the client's. State that cannot
    /// move — temporary tables, advisory locks, WITH HOLD cursors — comes back as blockers. The
    /// reported parameters are PostgreSQL's GUC_REPORT ones from 14 to 18, read with
    /// current_setting (pg_settings hides is_superuser and session_authorization); those an
    /// older server does not have come back null and are left out.
    /// </summary>
    public const string Query = """
        select 'blocker'::text, 'temporary tables'::text, null::text, null::text where exists (select from pg_catalog.pg_class where relnamespace = pg_catalog.pg_my_temp_schema())
        union all select 'blocker', 'advisory locks', null, null where exists (select from pg_catalog.pg_locks where locktype = 'advisory' and pid = pg_catalog.pg_backend_pid())
        union all select 'blocker', 'WITH HOLD cursors', null, null where exists (select from pg_catalog.pg_cursors where is_holdable)
        union all select 'set', name, pg_catalog.current_setting(name), null from pg_catalog.pg_settings where source = 'session'
        union all select 'listen', c, null, null from pg_catalog.pg_listening_channels() c
        union all select case when from_sql then 'prepare-sql' else 'prepare' end, name, statement,
            pg_catalog.array_to_json(array(select case when t::oid < 16384 then t::oid::text else t::text end
                from pg_catalog.unnest(parameter_types) with ordinality u(t, n) order by n))::text
            from pg_catalog.pg_prepared_statements
        union all select 'report', n, pg_catalog.current_setting(n, true), null
            from pg_catalog.unnest(array['application_name', 'client_encoding', 'DateStyle', 'default_transaction_read_only', 'in_hot_standby',
                'integer_datetimes', 'IntervalStyle', 'is_superuser', 'scram_iterations', 'search_path', 'server_encoding', 'server_version',
                'session_authorization', 'standard_conforming_strings', 'TimeZone']) n
            where pg_catalog.current_setting(n, true) is not null
        """;

    /// <summary><see cref="Query"/> as a simple-protocol Query message.</summary>
    public static readonly byte[] QueryMessage = new MessageWriter().Query(Query).ToArray();

    /// <summary>
    /// Reads the answer to <see cref="Query"/>. Notifications that arrive meanwhile go to
    /// <paramref name="notify"/> (the client must still get them); an error answer is a blocker.
    /// </summary>
    public static async Task<SessionSnapshot?> ReadAsync(MessageReader reader, Func<byte[], Task> notify, CancellationToken cancellationToken)
    {
        var blockers = new List<string>();
        var settings = new List<KeyValuePair<string, string>>();
        var channels = new List<string>();
        var statements = new List<PreparedStatement>();
        var reported = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        while (await reader.ReadAsync(cancellationToken) is { } message)
        {
            switch (message.Type)
            {
                case (byte)'D':
                    var row = DataRow(message.Body);
                    if (row.Count != 4 || row[0] is not { } kind || row[1] is not { } name)
                    {
                        blockers.Add("an unreadable session state");
                        break;
                    }

                    switch (kind)
                    {
                        case "blocker":
                            blockers.Add(name);
                            break;
                        case "set":
                            settings.Add(new(name, row[2] ?? string.Empty));
                            break;
                        case "listen":
                            channels.Add(name);
                            break;
                        case "report":
                            reported[name] = row[2] ?? string.Empty;
                            break;
                        default:
                            var types = JsonSerializer.Deserialize<string[]>(row[3] ?? "[]") ?? [];
                            statements.Add(new PreparedStatement(name, row[2] ?? string.Empty, kind == "prepare-sql", types));
                            break;
                    }

                    break;
                case (byte)'E':
                    blockers.Add($"its state could not be read ({ErrorText(message.Body)})");
                    break;
                case (byte)'A':
                    await notify(message.Raw);
                    break;
                case (byte)'Z':
                    return new SessionSnapshot(blockers, settings, channels, statements) { Reported = reported };
                default:
                    // RowDescription, CommandComplete, notices, ParameterStatus: nothing to keep.
                    break;
            }
        }

        return null;
    }

    /// <summary>The columns of a DataRow in text format (null for SQL NULL).</summary>
    public static List<string?> DataRow(byte[] body)
    {
        var columns = new List<string?>();
        var count = BinaryPrimitives.ReadInt16BigEndian(body);
        var at = 2;
        for (var i = 0; i < count; i++)
        {
            var length = BinaryPrimitives.ReadInt32BigEndian(body.AsSpan(at));
            at += 4;
            if (length < 0)
            {
                columns.Add(null);
                continue;
            }

            columns.Add(Encoding.UTF8.GetString(body, at, length));
            at += length;
        }

        return columns;
    }

    /// <summary>"SQLSTATE: message" of an ErrorResponse body, for logs and reasons.</summary>
    public static string ErrorText(byte[] body)
    {
        string? code = null, text = null;
        var at = 0;
        while (at < body.Length && body[at] != 0)
        {
            var field = body[at++];
            var value = MessageWriter.ReadCString(body, ref at);
            if (field == (byte)'C')
            {
                code = value;
            }
            else if (field == (byte)'M')
            {
                text = value;
            }
        }

        return string.Create(CultureInfo.InvariantCulture, $"{code}: {text}");
    }
}
