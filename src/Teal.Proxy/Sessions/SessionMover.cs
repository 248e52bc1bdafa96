using System.Buffers.Binary;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;
using Teal.Proxy.Protocol;

namespace Teal.Proxy.Sessions;

/// <summary>A session opened on the new target for a moved client, or why it could not be.</summary>
internal sealed record MovedSession(ServerLink? Server, ulong BackendKey, string? Failure);

/// <summary>
/// Opens a server session on the endpoint's target for a client whose old session ended between
/// transactions, logs in as the same role without the client's password, and replays the
/// session's state, so that the client goes on as if nothing happened.
/// </summary>
internal static class SessionMover
{
    /// <summary>
    /// Logs in with the client's own startup packet (same role, database and parameters), using
    /// the client's captured SCRAM login and the role's verifier on the target (Teal's auth
    /// query) when the server asks for SCRAM, then replays <paramref name="snapshot"/>.
    /// </summary>
    public static async Task<MovedSession> OpenAsync(
        EndpointTarget target,
        byte[] startup,
        ScramCapture? scram,
        Func<string, CancellationToken, Task<ScramVerifier?>>? verifier,
        SessionSnapshot snapshot,
        ProxyOptions options,
        CancellationToken cancellationToken)
    {
        var server = new ServerLink();
        try
        {
            if (await server.OpenAsync(target, options, cancellationToken) is { } unreachable)
            {
                server.Dispose();
                return new MovedSession(null, 0, $"{target.Instance} could not be reached: {unreachable}");
            }

            await server.SendAllAsync(startup, cancellationToken);
            var reader = new MessageReader(server.ReceiveAsync);
            var login = await LogInAsync(server, reader, startup, scram, verifier, cancellationToken);
            if (login.Failure is not null)
            {
                server.Dispose();
                return login;
            }

            var failure = await ReplayAsync(server, reader, snapshot, cancellationToken);
            if (failure is not null)
            {
                server.Dispose();
                return new MovedSession(null, 0, failure);
            }

            return login with { Server = server };
        }
        catch (Exception ex) when (ex is SocketException or IOException or InvalidDataException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            server.Dispose();
            return new MovedSession(null, 0, $"{target.Instance} could not be reached: {ex.Message}");
        }
        catch
        {
            server.Dispose();
            throw;
        }
    }

    private static async Task<MovedSession> LogInAsync(
        ServerLink server,
        MessageReader reader,
        byte[] startup,
        ScramCapture? scram,
        Func<string, CancellationToken, Task<ScramVerifier?>>? verifierSource,
        CancellationToken cancellationToken)
    {
        var role = MessageWriter.StartupParameters(startup).FirstOrDefault(p => p.Key == "user").Value ?? string.Empty;
        ulong key = 0;
        ScramLogin? login = null;
        while (await reader.ReadAsync(cancellationToken) is { } message)
        {
            switch (message.Type)
            {
                case (byte)'R':
                    var code = BinaryPrimitives.ReadInt32BigEndian(message.Body);
                    if (code == 0)
                    {
                        break;
                    }

                    if (code == 10)
                    {
                        if (scram is not { Complete: true } || verifierSource is null)
                        {
                            return Failed("the server asks for SCRAM, and the client did not log in to the proxy with SCRAM (or Teal has no auth query here)");
                        }

                        var verifier = await verifierSource(role, cancellationToken);
                        var clientKey = verifier is null ? null : scram.ClientKey(verifier);
                        if (verifier is null || clientKey is null)
                        {
                            return Failed($"role {role} has no SCRAM verifier on the new server matching the one the client proved itself against");
                        }

                        login = new ScramLogin(verifier, clientKey);
                    }

                    if (login is null || code is not (10 or 11 or 12))
                    {
                        return Failed(code switch
                        {
                            3 => "the server asks for a cleartext password, which the proxy does not keep",
                            5 => "the server asks for an md5 password, which the proxy cannot answer without the password",
                            _ => $"the server asks for an authentication the proxy cannot answer (code {code})",
                        });
                    }

                    var (send, failure) = login.Answer(code, Encoding.UTF8.GetString(message.Body, 4, message.Body.Length - 4));
                    if (failure is not null)
                    {
                        return Failed(failure);
                    }

                    if (send is not null)
                    {
                        await SendAsync(server, send, cancellationToken);
                    }

                    break;
                case (byte)'E':
                    return Failed($"the server refused the login ({SessionSnapshot.ErrorText(message.Body)})");
                case (byte)'K' when message.Body.Length == 8:
                    key = BinaryPrimitives.ReadUInt64BigEndian(message.Body);
                    break;
                case (byte)'Z':
                    return new MovedSession(null, key, null);
                default:
                    // ParameterStatus and notices: the client saw its own at its login.
                    break;
            }
        }

        return Failed("the server closed the connection during login");
    }

    /// <summary>Settings and LISTENs first (a statement is parsed under the session's search_path), then the prepared statements.</summary>
    private static async Task<string?> ReplayAsync(ServerLink server, MessageReader reader, SessionSnapshot snapshot, CancellationToken cancellationToken)
    {
        var batch = new MessageWriter();
        if (snapshot.Settings.Count > 0)
        {
            // set_config with parameters: no quoting of values, whatever standard_conforming_strings says.
            batch.Parse(string.Empty, "select pg_catalog.set_config($1, $2, false)", []);
            // role and session_authorization last: settings made before a SET ROLE may need the privileges it gives up.
            foreach (var (name, value) in snapshot.Settings.OrderBy(s => s.Key is "role" or "session_authorization" ? 1 : 0))
            {
                batch.Bind(name, value).Execute();
            }
        }

        foreach (var channel in snapshot.Channels)
        {
            batch.Parse(string.Empty, "LISTEN " + QuoteIdentifier(channel), []).Bind().Execute();
        }

        if (await RunAsync(server, reader, batch.Sync(), cancellationToken) is { } failure)
        {
            return $"replaying settings failed ({failure})";
        }

        if (snapshot.Statements.Count == 0)
        {
            return null;
        }

        var types = await ResolveTypesAsync(server, reader, snapshot.Statements, cancellationToken);
        if (types is null)
        {
            return "the types of a prepared statement's parameters could not be found on the new server";
        }

        batch = new MessageWriter();
        foreach (var statement in snapshot.Statements)
        {
            if (statement.FromSql)
            {
                batch.Parse(string.Empty, statement.Statement, []).Bind().Execute();
            }
            else
            {
                batch.Parse(statement.Name, statement.Statement, [.. statement.ParameterTypes.Select(t => types[t])]);
            }
        }

        return await RunAsync(server, reader, batch.Sync(), cancellationToken) is { } prepareFailure ? $"preparing statements again failed ({prepareFailure})" : null;
    }

    /// <summary>Built-in types by their OID; the others (OIDs differ between servers) by name on the new server.</summary>
    private static async Task<Dictionary<string, uint>?> ResolveTypesAsync(ServerLink server, MessageReader reader, IReadOnlyList<PreparedStatement> statements, CancellationToken cancellationToken)
    {
        var all = statements.SelectMany(s => s.ParameterTypes).Distinct().ToList();
        var result = all.Where(t => uint.TryParse(t, CultureInfo.InvariantCulture, out _)).ToDictionary(t => t, t => uint.Parse(t, CultureInfo.InvariantCulture));
        var named = all.Where(t => !result.ContainsKey(t)).ToList();
        if (named.Count == 0)
        {
            return result;
        }

        if (named.Any(n => n.Contains("$teal$", StringComparison.Ordinal)))
        {
            return null;
        }

        var sql = "select " + string.Join(", ", named.Select(n => $"$teal${n}$teal$::pg_catalog.regtype::pg_catalog.oid::text"));
        await SendAsync(server, new MessageWriter().Query(sql).ToArray(), cancellationToken);
        var ok = true;
        while (await reader.ReadAsync(cancellationToken) is { } message)
        {
            if (message.Type == (byte)'D')
            {
                var row = SessionSnapshot.DataRow(message.Body);
                for (var i = 0; i < named.Count; i++)
                {
                    result[named[i]] = uint.Parse(row[i]!, CultureInfo.InvariantCulture); // regtype::oid is never null.
                }
            }
            else if (message.Type == (byte)'E')
            {
                ok = false;
            }
            else if (message.Type == (byte)'Z')
            {
                return ok ? result : null;
            }
        }

        return null;
    }

    /// <summary>Sends one batch ending in Sync and reads to its ReadyForQuery; the first error's text, or null.</summary>
    private static async Task<string?> RunAsync(ServerLink server, MessageReader reader, MessageWriter batch, CancellationToken cancellationToken)
    {
        await SendAsync(server, batch.ToArray(), cancellationToken);
        string? failure = null;
        while (await reader.ReadAsync(cancellationToken) is { } message)
        {
            if (message.Type == (byte)'E')
            {
                failure ??= SessionSnapshot.ErrorText(message.Body);
            }
            else if (message.Type == (byte)'Z')
            {
                return failure;
            }
        }

        return "the server closed the connection";
    }

    private static string QuoteIdentifier(string name) => "\"" + name.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    private static MovedSession Failed(string reason) => new(null, 0, reason);

    private static ValueTask SendAsync(ServerLink server, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        server.SendAllAsync(data, cancellationToken);
}
