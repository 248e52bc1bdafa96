using System.Buffers.Binary;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;
using Teal.Proxy.Protocol;

namespace Teal.Proxy.Sessions;

/// <summary>A session opened on the new target for a moved client, or why it could not be.</summary>
internal sealed record MovedSession(ServerLink? Server, ulong BackendKey, string? Failure)
{
    /// <summary>
    /// ParameterStatus messages of the new server whose value the client has not seen (its
    /// server_version, a setting it reports differently): sent to the client before anything
    /// else from the new session, as a server sends one whenever a reported value changes.
    /// </summary>
    public IReadOnlyList<byte[]> ParameterChanges { get; init; } = [];

    /// <summary>Connecting and logging in, up to the new server's ReadyForQuery.</summary>
    public double LoginMilliseconds { get; init; }

    /// <summary>Replaying the session's state there.</summary>
    public double ReplayMilliseconds { get; init; }
}

/// <summary>
/// A server session logged in on the new target for a moving client, its state not replayed
/// yet. Logged in ahead of the resume, it waits there, sending nothing, until the endpoint resumes.
/// </summary>
internal sealed class LoggedInSession(ServerLink server, MessageReader reader, ReportedParameters reported, ulong backendKey, EndpointTarget target, double loginMilliseconds) : IDisposable
{
    public ServerLink Server => server;

    public MessageReader Reader => reader;

    public ReportedParameters Reported => reported;

    public ulong BackendKey => backendKey;

    public EndpointTarget Target => target;

    public double LoginMilliseconds => loginMilliseconds;

    public void Dispose() => server.Dispose();
}

/// <summary>
/// Opens a server session on the endpoint's target for a client whose old session ended between
/// transactions, logs in as the same role without the client's password, and replays the
/// session's state, so that the client goes on as if nothing happened. The login and the replay
/// are separate: a switchover lets the login happen before the resume (before the pause, or
/// while green finishes opening), and the replay right after it; nothing of the client's own
/// reaches the new server before the endpoint has resumed.
/// </summary>
internal static class SessionMover
{
    /// <summary>
    /// The parameter the fence sets on the server: a session that logged in before the unfence's
    /// reload reports the fence's value at login, and the new value itself before its next
    /// ReadyForQuery (the reload reaches it before its first statement). The login's report is
    /// not the session's and is not passed on.
    /// </summary>
    private const string FenceParameter = "default_transaction_read_only";

    /// <summary>
    /// Logs in with the client's own startup packet (same role, database and parameters), using
    /// the client's captured SCRAM login and the role's verifier on the target (Teal's auth
    /// query) when the server asks for SCRAM. <paramref name="beforeResume"/>: the endpoint is
    /// still paused (green's logins are back, the rest of its unfence may still run).
    /// <paramref name="near"/>: the client's socket, whose event loop the new server socket joins.
    /// </summary>
    public static async Task<(LoggedInSession? Session, string? Failure)> LogInAsync(
        EndpointTarget target,
        byte[] startup,
        ScramCapture? scram,
        Func<string, CancellationToken, Task<ScramVerifier?>>? verifier,
        ProxyOptions options,
        PlaintextServers plaintext,
        bool beforeResume,
        CancellationToken cancellationToken,
        string? socket = null,
        EpollSocket? near = null)
    {
        var server = new ServerLink(near);
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            var opened = socket is null ? server.OpenAsync(target, options, cancellationToken, plaintext) : server.OpenLocalAsync(socket, options.ConnectTimeout, cancellationToken);
            if (await opened is { } unreachable)
            {
                server.Dispose();
                return (null, $"{target.Instance} could not be reached: {unreachable}");
            }

            await server.SendAllAsync(startup, cancellationToken);
            var reader = new MessageReader(server.ReceiveAsync);
            var reported = new ReportedParameters();
            var login = await LogInAsync(server, reader, startup, scram, verifier, reported, cancellationToken);
            if (login.Failure is not null)
            {
                server.Dispose();
                return (null, login.Failure);
            }

            if (beforeResume)
            {
                reported.Remove(FenceParameter);
            }

            return (new LoggedInSession(server, reader, reported, login.BackendKey, target, System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds), null);
        }
        catch (Exception ex) when (ex is SocketException or IOException or InvalidDataException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            server.Dispose();
            return (null, $"{target.Instance} could not be reached: {ex.Message}");
        }
        catch
        {
            server.Dispose();
            throw;
        }
    }

    /// <summary>Whether two targets are the same server and database (a flip renames green's instance, not its address).</summary>
    public static bool SameServer(EndpointTarget a, EndpointTarget b) =>
        a.Host == b.Host && a.Port == b.Port && a.Database == b.Database;

    /// <summary>
    /// Replays <paramref name="snapshot"/> on a logged-in session. On failure the session is
    /// disposed and the result says why.
    /// </summary>
    public static async Task<MovedSession> ReplayAsync(LoggedInSession session, SessionSnapshot snapshot, CancellationToken cancellationToken)
    {
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            var failure = await ReplayAsync(session.Server, session.Reader, snapshot, session.Reported, cancellationToken);
            if (failure is not null)
            {
                session.Dispose();
                return new MovedSession(null, 0, failure);
            }

            return new MovedSession(session.Server, session.BackendKey, null)
            {
                ParameterChanges = session.Reported.ChangedFrom(snapshot.Reported),
                LoginMilliseconds = session.LoginMilliseconds,
                ReplayMilliseconds = System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds,
            };
        }
        catch (Exception ex) when (ex is SocketException or IOException or InvalidDataException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            session.Dispose();
            return new MovedSession(null, 0, $"{session.Target.Instance} could not be reached: {ex.Message}");
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    private static async Task<MovedSession> LogInAsync(
        ServerLink server,
        MessageReader reader,
        byte[] startup,
        ScramCapture? scram,
        Func<string, CancellationToken, Task<ScramVerifier?>>? verifierSource,
        ReportedParameters reported,
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
                case (byte)'S':
                    reported.Add(message.Body, message.Raw);
                    break;
                default:
                    // Notices: the client saw its own at its login.
                    break;
            }
        }

        return Failed("the server closed the connection during login");
    }

    /// <summary>
    /// Settings and LISTENs first (a statement is parsed under the session's search_path), then
    /// the prepared statements. Pipelined: what does not depend on an answer goes in one write,
    /// so a session with settings and prepared statements of built-in types costs one round trip
    /// (two when a parameter type must be looked up by name on the new server first).
    /// </summary>
    private static async Task<string?> ReplayAsync(ServerLink server, MessageReader reader, SessionSnapshot snapshot, ReportedParameters reported, CancellationToken cancellationToken)
    {
        var batch = new MessageWriter();
        var settingsSent = false;
        if (snapshot.Settings.Count > 0 || snapshot.Channels.Count > 0)
        {
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

            batch.Sync();
            settingsSent = true;
        }

        var types = BuiltInTypes(snapshot.Statements, out var named);
        if (named.Any(n => n.Contains("$teal$", StringComparison.Ordinal)))
        {
            return "the types of a prepared statement's parameters could not be found on the new server";
        }

        // Named types are looked up under the replayed search_path, in the same write as the settings.
        var typeQuery = named.Count == 0 ? null : "select " + string.Join(", ", named.Select(n => $"$teal${n}$teal$::pg_catalog.regtype::pg_catalog.oid::text"));
        if (typeQuery is not null)
        {
            batch.Query(typeQuery);
        }
        else if (snapshot.Statements.Count > 0)
        {
            Prepare(batch, snapshot.Statements, types);
        }

        var statementsSent = typeQuery is null && snapshot.Statements.Count > 0;
        if (!settingsSent && typeQuery is null && !statementsSent)
        {
            return null;
        }

        await SendAsync(server, batch.ToArray(), cancellationToken);
        string? settingsFailure = null;
        if (settingsSent && await ReadResultAsync(reader, reported, null, cancellationToken) is { } failure)
        {
            settingsFailure = $"replaying settings failed ({failure})";
        }

        if (typeQuery is not null)
        {
            var resolved = true;
            var typesFailure = await ReadResultAsync(
                reader,
                reported,
                row =>
                {
                    for (var i = 0; i < named.Count; i++)
                    {
                        if (row[i] is not { } oid || !uint.TryParse(oid, CultureInfo.InvariantCulture, out var value))
                        {
                            resolved = false;
                            return;
                        }

                        types[named[i]] = value;
                    }
                },
                cancellationToken);
            if (settingsFailure is not null)
            {
                return settingsFailure;
            }

            if (typesFailure is not null || !resolved || named.Any(n => !types.ContainsKey(n)))
            {
                return "the types of a prepared statement's parameters could not be found on the new server";
            }

            batch = new MessageWriter();
            Prepare(batch, snapshot.Statements, types);
            await SendAsync(server, batch.ToArray(), cancellationToken);
        }

        if (snapshot.Statements.Count > 0 && await ReadResultAsync(reader, reported, null, cancellationToken) is { } prepareFailure)
        {
            return settingsFailure ?? $"preparing statements again failed ({prepareFailure})";
        }

        return settingsFailure;
    }

    private static void Prepare(MessageWriter batch, IReadOnlyList<PreparedStatement> statements, Dictionary<string, uint> types)
    {
        foreach (var statement in statements)
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

        batch.Sync();
    }

    /// <summary>Built-in types by their OID (the same on every server); <paramref name="named"/> gets the others, whose OIDs differ between servers.</summary>
    private static Dictionary<string, uint> BuiltInTypes(IReadOnlyList<PreparedStatement> statements, out List<string> named)
    {
        var all = statements.SelectMany(s => s.ParameterTypes).Distinct().ToList();
        var result = all.Where(t => uint.TryParse(t, CultureInfo.InvariantCulture, out _)).ToDictionary(t => t, t => uint.Parse(t, CultureInfo.InvariantCulture));
        named = [.. all.Where(t => !result.ContainsKey(t))];
        return result;
    }

    /// <summary>
    /// Reads one answer to its ReadyForQuery: the first error's text or null; rows go to
    /// <paramref name="onRow"/>, and ParameterStatus messages (a replayed SET of a reported
    /// parameter) to <paramref name="reported"/>.
    /// </summary>
    private static async Task<string?> ReadResultAsync(MessageReader reader, ReportedParameters reported, Action<List<string?>>? onRow, CancellationToken cancellationToken)
    {
        string? failure = null;
        while (await reader.ReadAsync(cancellationToken) is { } message)
        {
            switch (message.Type)
            {
                case (byte)'E':
                    failure ??= SessionSnapshot.ErrorText(message.Body);
                    break;
                case (byte)'D':
                    onRow?.Invoke(SessionSnapshot.DataRow(message.Body));
                    break;
                case (byte)'S':
                    reported.Add(message.Body, message.Raw);
                    break;
                case (byte)'Z':
                    return failure;
                default:
                    break;
            }
        }

        return "the server closed the connection";
    }

    private static string QuoteIdentifier(string name) => "\"" + name.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    private static MovedSession Failed(string reason) => new(null, 0, reason);

    private static ValueTask SendAsync(ServerLink server, ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        server.SendAllAsync(data, cancellationToken);
}

/// <summary>
/// How long each part of one move took: reading the state and leaving the old server, waiting
/// for the endpoint to resume, logging in on the new target (during that wait, when green's
/// logins came back before the resume), replaying the state (then also during that wait).
/// </summary>
internal readonly record struct MoveTimings(double LeaveMs, double WaitMs, double LoginMs, double ReplayMs)
{
    /// <summary>The login happened while the endpoint was still paused (it overlapped the wait).</summary>
    public bool LoggedInBeforeResume { get; init; }

    /// <summary>The login happened before the pause, on a still-fenced green over its local socket.</summary>
    public bool LoggedInBeforePause { get; init; }

    /// <summary>The state was replayed while the endpoint was still paused, right after such a login.</summary>
    public bool ReplayedBeforeResume { get; init; }

    /// <summary>From the drain's request to the session's transaction boundary, where the state query is sent.</summary>
    public double BoundaryMs { get; init; }

    /// <summary>From the state query's sending to its answer arriving (the move's start).</summary>
    public double StateReadMs { get; init; }

    /// <summary>The state was read ahead of the pause and the client sent nothing since: the drain sent an empty query instead.</summary>
    public bool StateReadAhead { get; init; }

    /// <summary>From leaving the old server to green's logins coming back (0: they came back with the resume).</summary>
    public double LoginsOpenedMs { get; init; }

    /// <summary>From the resume to the session going on on its new server: its login's tail past the resume and the replay.</summary>
    public double ReadyAfterResumeMs { get; init; }
}

/// <summary>
/// The values of reported parameters (ParameterStatus) a new server sent while a session moved
/// to it, as the raw messages to forward, by name.
/// </summary>
internal sealed class ReportedParameters
{
    private readonly Dictionary<string, (string Value, byte[] Raw)> _latest = new(StringComparer.OrdinalIgnoreCase);

    public void Remove(string name) => _latest.Remove(name);

    public void Add(byte[] body, byte[] raw)
    {
        var at = 0;
        var name = MessageWriter.ReadCString(body, ref at);
        var value = MessageWriter.ReadCString(body, ref at);
        _latest[name] = (value, raw);
    }

    /// <summary>The messages whose value differs from what the old server reported to the client, or that it never reported.</summary>
    public IReadOnlyList<byte[]> ChangedFrom(IReadOnlyDictionary<string, string> old) =>
        [.. _latest.Where(p => !old.TryGetValue(p.Key, out var value) || value != p.Value.Value).Select(p => p.Value.Raw)];
}
