using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Teal.Core.Endpoints;
using Teal.Proxy.Protocol;
using Teal.Proxy.Sessions;
using Teal.Proxy.Tls;

namespace Teal.Proxy.Endpoints;

/// <summary>How a proxied connection left its server in a drain.</summary>
internal enum ConnectionOutcome
{
    Open,
    ClosedIdle,
    ClosedAtDeadline,

    /// <summary>Between transactions, its state read and movable: it waits for the resume to go on on the new target.</summary>
    Moving,
}

/// <summary>
/// One client connection: reads its startup packet, is admitted (or held) by the endpoint,
/// connects to the target, relays the login and pumps bytes both ways. Both pumps follow the
/// message framing to know when the session is between transactions: a drain moves it there
/// (or closes it, when its state cannot move) and nowhere else.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001", Justification = "Abort disposes the sockets and the TLS stream: the connection's lifetime is RunAsync, which always ends in Abort, not a using scope")]
internal sealed class ProxyConnection : IEndpointConnection
{
    private readonly ProxyEndpoint _endpoint;
    private readonly Socket _client;
    private readonly ProxyOptions _options;

    // Session state shared by the two pumps and a drain; every read and write is under _lock.
    // Uncontended, it costs two lock round trips per chunk, far below the syscalls around it.
    private readonly Lock _lock = new();
    private int _pendingSyncs;
    private bool _unsynced;
    private bool _clientPartial;
    private bool _serverPartial;
    private byte _status;
    private int _idleReadies; // ReadyForQuery 'I' in a row: the client's statements commit one round trip each
    private long _lastReadyAt; // when the last ReadyForQuery came (Environment.TickCount64: a coarse clock, cheaper per answer)
    private bool _writingToClient;
    private bool _pumping; // the pumps forward; set once, under the lock
    private bool _tellingClient; // a cut is telling the client why, and closes its socket after
    private bool _drainRequested;
    private long _drainRequestedAt;
    private long _departedAt; // the boundary: the state query goes out
    private MoveWait _moveWait;
    private TaskCompletionSource? _clientSent; // made at each departure: most connections never move

    // The state read ahead of a pause (RequestStateReadAhead): asked for, under way, and its
    // result, which a move uses instead of reading again while the client has sent nothing since.
    private bool _readAheadRequested;
    private bool _readingAhead;
    private TaskCompletionSource? _readAheadDone; // made at each read-ahead
    private SessionSnapshot? _readAhead;
    private long _clientReads; // chunks received from the client: unchanged since the read-ahead began means quiet
    private long _clientReadsAtReadAhead;
    private bool _moveWithReadAhead;
    private bool _closing;
    private bool _closedDuringLogin; // set with _closing, read after it by the one closing
    private bool _moving;
    private bool _leftServer; // moving, and already gone from its old server: it waits for the route
    private bool _routeTaken; // moving, and it has its target: it logs in or replays there

    // A drain came before the connection had a server (its verifier being read, or its client in
    // the SCRAM exchange with the proxy): nothing to leave, so it is admitted again, held by the
    // pause, and logs in where the pause's route goes. A slow client does not hold the drain.
    private bool _readmit;

    // A drain of a later pause came while the session was still landing on the route of the one
    // it moved in: once landed, it leaves that server again for the route of the new one.
    private bool _drainWhileLanding;
    private bool _departedAgain; // ... and it has: the move ending now leaves the next one's wait alone
    private TaskCompletionSource _moved = NewSignal();
    private TaskCompletionSource<ConnectionOutcome>? _drained;
    private ConnectionOutcome _outcome;
    private ServerLink? _server;
    private Action? _cancelMove; // cancels a move under way when the connection is cut

    // A session logged in on green before the pause (LogInBeforePause): the move takes it, or
    // the resume, the endpoint's expiry or the connection's end closes it.
    private Task<LoggedInSession?>? _loggedInBeforePause;

    // Each framer is touched only by the pump of its direction.
    private MessageFramer _clientFramer;
    private MessageFramer _serverFramer;

    private byte[] _startup = [];
    private ScramCapture? _scram;

    // The verifier the client proved its password against when the proxy checked it itself.
    private ScramVerifier? _loginVerifier;
    private bool _loggedInWithoutPassword;
    private bool _slot;

    // Set once while reading the startup packet, before anything else touches the client.
    private SslStream? _tls;

    // The client's TLS: OpenSSL on the event loop's socket, or SslStream.
    private bool Encrypted => _tls is not null || _clientIo?.Encrypted == true;

    // The client socket on the proxy's event loop (EpollSockets), when it runs; set first thing in RunAsync.
    private EpollSocket? _clientIo;

    public ProxyConnection(ProxyEndpoint endpoint, Socket client, long id, ProxyOptions options)
    {
        _endpoint = endpoint;
        _client = client;
        Id = id;
        _options = options;
    }

    public long Id { get; }

    /// <summary>Chunks received from the client so far: unchanged over a while means a quiet session.</summary>
    internal long ClientReads
    {
        get
        {
            lock (_lock)
            {
                return _clientReads;
            }
        }
    }

    /// <summary>
    /// Whether what the client sent waits behind the state read ahead of the pause: a client at
    /// work that sends nothing more until it has its answer, however long the read takes.
    /// </summary>
    internal bool WaitsOnReadAhead
    {
        get
        {
            lock (_lock)
            {
                return _readingAhead && _clientReads != _clientReadsAtReadAhead;
            }
        }
    }

    /// <summary>
    /// Whether the state read ahead of the pause found LISTEN channels: a quiet client that may
    /// be waiting for notifications, which it must not miss on green while its session logs in
    /// there after the resume.
    /// </summary>
    internal bool ListensAhead
    {
        get
        {
            lock (_lock)
            {
                return _readAhead is { Channels.Count: > 0 };
            }
        }
    }

    /// <summary>
    /// Whether the client is at work and its last <see cref="AutocommitReadies"/> answers all
    /// ended outside a transaction block: each of its statements commits in one round trip (an
    /// autocommit writer), so a drain can let it go on writing on the old server while other
    /// sessions finish their transactions, and take it after them (<see cref="ProxyEndpoint.DrainAsync"/>).
    /// At work means a statement on the server now, or an answer within <see cref="AutocommitRecentMs"/>
    /// (a loaded machine can leave the client that long between its statements): an idle
    /// connection (a pool's) leaves at once as before, rather than take its next client's
    /// transaction to the old server.
    /// </summary>
    internal bool Autocommitting
    {
        get
        {
            lock (_lock)
            {
                return _idleReadies >= AutocommitReadies && _status == (byte)'I' && !_closing && !_moving && !_readingAhead
                    && (_pendingSyncs > 0 || _unsynced || _clientPartial || Environment.TickCount64 - _lastReadyAt < AutocommitRecentMs);
            }
        }
    }

    internal const int AutocommitReadies = 10;

    internal const long AutocommitRecentMs = 100;

    /// <summary>Set by the endpoint, under its gate, when the connection may go upstream.</summary>
    public bool Admitted { get; set; }

    /// <summary>BackendKeyData the client holds, to route its CancelRequest to the session that owns it now.</summary>
    public ulong? BackendKey { get; private set; }

    public EndpointTarget? Target { get; private set; }

    public ConnectionOutcome Outcome
    {
        get
        {
            lock (_lock)
            {
                return _outcome;
            }
        }
    }

    /// <summary>The connection's lifetime; set once by the endpoint right after construction.</summary>
    public Task Completion { get; set; } = Task.CompletedTask;

    public async Task RunAsync(CancellationToken stopping)
    {
        var reason = "client closed";
        try
        {
            lock (_lock)
            {
                // Under the lock, as Abort reads it: a connection cut before it starts stays off the loop.
                _clientIo = _closing ? null : EpollSockets.Attach(_client);
            }

            var startup = await ReadStartupAsync(stopping);
            if (startup is null)
            {
                reason = "no startup packet";
                return;
            }

            if (startup.Length == PostgresWire.CancelRequestLength && BinaryPrimitives.ReadInt32BigEndian(startup.AsSpan(4)) == PostgresWire.CancelRequestCode)
            {
                await _endpoint.ForwardCancelAsync(startup, stopping);
                reason = "cancel request forwarded";
                return;
            }

            if (_options.RequireTls && !Encrypted)
            {
                await SendToClientQuietlyAsync(PostgresWire.FatalError(PostgresWire.InvalidAuthorization, $"Teal endpoint {_endpoint.Name} accepts only TLS connections; connect with sslmode=require or stronger"));
                reason = "refused: no TLS";
                return;
            }

            if (!_endpoint.TryTakeSlot())
            {
                await SendToClientQuietlyAsync(_endpoint.TooManyError);
                reason = "over the endpoint's connection cap";
                return;
            }

            _slot = true;
            _startup = startup;
            var target = await AdmitAsync(stopping);
            if (target is null)
            {
                await SendToClientQuietlyAsync(_endpoint.PausedError);
                reason = "held past the pause deadline";
                return;
            }

            Target = target;
            var verifier = await LoginVerifierAsync(target, startup, stopping);
            if (verifier is not null && !await AuthenticateClientAsync(startup, verifier, stopping))
            {
                reason = "client authentication failed";
                return;
            }

            var server = await ConnectAsync(target, stopping);
            if (server is null)
            {
                reason = "could not reach the target";
                return;
            }

            target = Target!; // Set by ConnectAsync: the pause's route when a drain came during the login.
            await server.SendAllAsync(startup, stopping);
            if (!await (verifier is null ? RelayLoginAsync(server, stopping) : LogInForClientAsync(server, target, verifier, stopping)))
            {
                reason = "login ended";
                return;
            }

            reason = await PumpAsync(server, stopping);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException or IOException or AuthenticationException)
        {
            reason = ex.Message;
        }
        catch (InvalidDataException ex)
        {
            reason = $"protocol error: {ex.Message}";
        }
        finally
        {
            Abort(ConnectionOutcome.ClosedIdle);
            if (_slot)
            {
                _endpoint.ReleaseSlot();
            }

            _endpoint.OnConnectionEnded(this, reason);
        }
    }

    /// <summary>
    /// Asks the connection to leave its server at its next transaction boundary, and starts that
    /// now if it is there. The task says how it left. Called once per drain, after the endpoint
    /// has stopped admitting.
    /// </summary>
    public Task<ConnectionOutcome> RequestDrain()
    {
        Departure departure;
        ServerLink? server;
        Task<ConnectionOutcome> drained;
        lock (_lock)
        {
            _drained = new TaskCompletionSource<ConnectionOutcome>(TaskCreationOptions.RunContinuationsAsynchronously);
            drained = _drained.Task;
            if (_closing)
            {
                _drained.TrySetResult(_outcome == ConnectionOutcome.Open ? ConnectionOutcome.ClosedIdle : _outcome);
                return drained;
            }

            if (_server is null)
            {
                _readmit = true;
                _drained.TrySetResult(ConnectionOutcome.Moving);
                return drained;
            }

            if (_leftServer)
            {
                if (!_routeTaken)
                {
                    // Still waiting for a route (a second drain of the same pause, as a new
                    // control-plane leader's recovery makes): it takes the route this pause ends
                    // with, so it is moving, not a session to cut at the budget.
                    _drained.TrySetResult(ConnectionOutcome.Moving);
                    return drained;
                }

                // A later pause (a switchback, a rollback right after a switchover) while the
                // session still logs in or replays on the last route's target, the side this
                // drain is for: it leaves that server again once it has landed, and the drain
                // waits for that like any session's departure. Counted as moving now, it would be
                // left behind on the side the switchover fences next.
                _drainWhileLanding = true;
                _readAheadRequested = false;
                _drainRequestedAt = Stopwatch.GetTimestamp();
                return drained;
            }

            _drainRequested = true;
            _readAheadRequested = false;
            _drainRequestedAt = Stopwatch.GetTimestamp();
            departure = TryDepartLocked();
            server = _server;
        }

        switch (departure)
        {
            case Departure.Close:
                _ = CloseBetweenTransactionsAsync();
                break;
            case Departure.Move:
                // The server pump reads the answer and does the rest.
                _ = server!.SendQuietlyAsync(StateQuery()); // TryDepartLocked requires a server.
                break;
            default:
                break;
        }

        return drained;
    }

    /// <summary>
    /// Cuts the connection, telling the client why with a FATAL 57P01 where it stands between two
    /// of the server's messages: a driver then reports the endpoint's reason (and retries, as it
    /// does after a server's shutdown) instead of a connection lost for no reason it can name.
    /// </summary>
    public void Cut(CutReason reason) => Abort(ConnectionOutcome.ClosedAtDeadline, reason);

    private void Abort(ConnectionOutcome outcome) => Abort(outcome, cut: null);

    private void Abort(ConnectionOutcome outcome, CutReason? cut)
    {
        ServerLink? server;
        Action? cancelMove;
        EpollSocket? clientIo;
        Task<LoggedInSession?>? loginBeforePause;
        byte[]? lastWords = null;
        bool telling;
        lock (_lock)
        {
            // Only from the pumps' steady state, and while the server pump is not writing: once
            // _closing is set it writes nothing more, so the error cannot split one of the server's
            // messages. Not while a move or a state read ahead runs: they pass notifications on to
            // the client on their own.
            if (cut is { } why && !_closing && _pumping && !_moving && !_readingAhead && !_writingToClient && !_serverPartial)
            {
                var idleInTransaction = _pendingSyncs == 0 && !_unsynced && !_clientPartial;
                lastWords = why == CutReason.EndpointStopping ? _endpoint.StoppingError
                    : idleInTransaction ? _endpoint.CutIdleError
                    : _endpoint.CutBusyError;
            }

            telling = _tellingClient;
            _tellingClient |= lastWords is not null;
            _closing = true;
            clientIo = _clientIo;
            if (_outcome is ConnectionOutcome.Open or ConnectionOutcome.Moving)
            {
                _outcome = outcome;
            }

            _drained?.TrySetResult(_outcome);
            EndMoveWaitLocked();
            _readAheadDone?.TrySetResult(); // a client pump held for it goes on, to find the connection closed
            server = _server;
            cancelMove = _cancelMove;
            loginBeforePause = _loggedInBeforePause;
            _loggedInBeforePause = null;
        }

        if (loginBeforePause is not null)
        {
            CloseWhenLoggedIn(loginBeforePause);
        }

        try
        {
            cancelMove?.Invoke();
        }
        catch (ObjectDisposedException)
        {
            // The move ended meanwhile.
        }

        if (lastWords is not null)
        {
            // The server first: the transaction ends there now, whatever the client is told.
            server?.Dispose();
            _ = TellAndCloseClientAsync(lastWords, clientIo);
        }
        else
        {
            if (!telling)
            {
                CloseClient(clientIo);
            }

            // Otherwise a cut is telling the client: it closes the socket once the error is out.
            server?.Dispose();
        }

        _moved.TrySetResult();
    }

    private void CloseClient(EpollSocket? clientIo)
    {
        _tls?.Dispose();
        clientIo?.Close();
        _client.Dispose();
    }

    /// <summary>The cut's error to the client, then the close; a client that does not read gets its close within a second.</summary>
    private async Task TellAndCloseClientAsync(byte[] error, EpollSocket? clientIo)
    {
        try
        {
            await SendToClientQuietlyAsync(error).WaitAsync(TimeSpan.FromSeconds(1));
            _endpoint.CountToClient(error.Length);
        }
        catch (TimeoutException)
        {
            // Its socket buffer is full: the close below ends the send.
        }
        finally
        {
            CloseClient(clientIo);
        }
    }

    /// <summary>
    /// Admission; a held client sends nothing (it waits for the server's answer to its startup
    /// packet), so a hang-up while held frees it at once.
    /// </summary>
    private Task<EndpointTarget?> AdmitAsync(CancellationToken stopping) => _endpoint.AdmitAsync(this, PeekClientAsync, stopping);

    /// <summary>
    /// The role's SCRAM verifier on the target when the proxy checks the password itself: with an
    /// auth query, for a role that has one. Null leaves the login to the server, relayed as is:
    /// md5 and password-less roles, roles that cannot log in or do not exist (the server's own
    /// error then says so), replication connections, and endpoints without an auth query.
    /// </summary>
    private async Task<ScramVerifier?> LoginVerifierAsync(EndpointTarget target, byte[] startup, CancellationToken stopping)
    {
        if (!_endpoint.HasAuthQuery)
        {
            return null;
        }

        var parameters = MessageWriter.StartupParameters(startup);
        if (parameters.Any(p => p.Key == "replication") || parameters.FirstOrDefault(p => p.Key == "user").Value is not { Length: > 0 } role)
        {
            return null;
        }

        return await _endpoint.LoginVerifierAsync(target, role, stopping);
    }

    /// <summary>
    /// Checks the client's password against the role's verifier (SCRAM-SHA-256, as PostgreSQL
    /// does); a wrong one gets PostgreSQL's own error. The proof it leaves is what logs the
    /// client in to servers, now and when its session moves.
    /// </summary>
    private async Task<bool> AuthenticateClientAsync(byte[] startup, ScramVerifier verifier, CancellationToken stopping)
    {
        var role = MessageWriter.StartupParameters(startup).First(p => p.Key == "user").Value;
        var (proven, error) = await ScramAuthenticator.RunAsync(role, verifier, new MessageReader(ReceiveFromClientAsync), message => SendToClientAllAsync(message), stopping);
        if (proven is null)
        {
            if (error is not null)
            {
                await SendToClientQuietlyAsync(error);
            }

            return false;
        }

        _scram = proven;
        _loginVerifier = verifier;
        return true;
    }

    /// <summary>
    /// Logs in to the server as the client's role with the ClientKey its proof gave, and tells
    /// the client AuthenticationOk once the server accepted; what follows (ParameterStatus,
    /// BackendKeyData, ReadyForQuery) goes through the pumps as with a relayed login. A server
    /// that refuses (database missing, role not permitted) gives the client its own error.
    /// </summary>
    private async Task<bool> LogInForClientAsync(ServerLink server, EndpointTarget target, ScramVerifier verifier, CancellationToken stopping)
    {
        var fromServer = new MessageReader(server.ReceiveAsync);
        var login = new ScramLogin(verifier, _scram!.ClientKey(verifier)!); // AuthenticateClientAsync proved this verifier.
        while (await fromServer.ReadAsync(stopping) is { } message)
        {
            if (message.Type != (byte)'R' || message.Body.Length < 4)
            {
                // An error ends the login; a notice is the client's to see.
                await SendToClientAsync(message.Raw);
                if (message.Type == (byte)'E')
                {
                    return false;
                }

                continue;
            }

            var code = BinaryPrimitives.ReadInt32BigEndian(message.Body);
            if (code == 0)
            {
                await SendToClientAsync(ScramAuthenticator.Ok());
                return true;
            }

            var (send, failure) = code is 10 or 11 or 12
                ? login.Answer(code, Encoding.UTF8.GetString(message.Body, 4, message.Body.Length - 4))
                : (null, $"the server asks for an authentication the proxy cannot answer on the client's behalf (code {code}); use scram-sha-256 in its pg_hba.conf");
            if (failure is not null)
            {
                await SendToClientQuietlyAsync(PostgresWire.FatalError(PostgresWire.InvalidAuthorization, $"Teal endpoint {_endpoint.Name} could not log in to instance {target.Instance}: {failure}"));
                return false;
            }

            if (send is not null)
            {
                await server.SendAllAsync(send, stopping);
            }
        }

        return false;
    }

    /// <summary>
    /// Forwards the login between client and server message by message (authentication strictly
    /// alternates), keeping what a SCRAM exchange leaves to log in again when the session moves.
    /// False when the login ended without AuthenticationOk.
    /// </summary>
    private async Task<bool> RelayLoginAsync(ServerLink server, CancellationToken stopping)
    {
        var fromServer = new MessageReader(server.ReceiveAsync);
        var fromClient = new MessageReader(ReceiveFromClientAsync);
        ScramCapture? scram = null;
        var askedForPassword = false;
        while (await fromServer.ReadAsync(stopping) is { } message)
        {
            // Over TLS the server offers SCRAM-SHA-256-PLUS, which binds to the server's TLS
            // session; the client's TLS (if any) ends at the proxy, so it cannot bind to it, and
            // libpq and Npgsql refuse PLUS offered on a plain connection. Relayed, it is taken
            // out. That is not enough for every client (some then claim channel binding support,
            // which the server refuses), which is why, with an auth query, the proxy checks
            // SCRAM itself instead of relaying it.
            var raw = server.Encrypted ? PostgresWire.WithoutChannelBinding(message.Raw) : message.Raw;
            await SendToClientAllAsync(raw);
            _endpoint.CountToClient(raw.Length);
            if (message.Type == (byte)'E')
            {
                return false;
            }

            if (message.Type != (byte)'R' || message.Body.Length < 4)
            {
                continue;
            }

            var code = BinaryPrimitives.ReadInt32BigEndian(message.Body);
            switch (code)
            {
                case 0:
                    scram?.OnAuthenticated();
                    _scram = scram is { Complete: true } ? scram : null;
                    _loggedInWithoutPassword = !askedForPassword;
                    return true;
                case 10:
                    scram = new ScramCapture();
                    break;
                case 11:
                    scram?.OnServerFirst(Encoding.UTF8.GetString(message.Body, 4, message.Body.Length - 4));
                    break;
                case 12:
                    // SASLFinal needs no answer; AuthenticationOk follows.
                    continue;
                default:
                    // Cleartext, md5, GSS, SSPI: forwarded, but nothing the proxy could reuse.
                    scram = null;
                    break;
            }

            askedForPassword = true;
            var answer = await fromClient.ReadAsync(stopping);
            if (answer is null)
            {
                return false;
            }

            _endpoint.CountFromClient(answer.Value.Raw.Length);
            if (scram is not null && answer.Value.Type == (byte)'p')
            {
                CaptureScram(scram, code, answer.Value.Body);
            }

            await server.SendAllAsync(answer.Value.Raw, stopping);
        }

        return false;
    }

    private static void CaptureScram(ScramCapture scram, int code, byte[] body)
    {
        if (code == 10)
        {
            // SASLInitialResponse: mechanism, data length, client-first-message.
            var at = 0;
            var mechanism = MessageWriter.ReadCString(body, ref at);
            if (mechanism == "SCRAM-SHA-256" && at + 4 <= body.Length)
            {
                scram.OnClientFirst(Encoding.UTF8.GetString(body, at + 4, body.Length - at - 4));
            }
        }
        else
        {
            scram.OnClientFinal(Encoding.UTF8.GetString(body));
        }
    }

    private async Task<string> PumpAsync(ServerLink server, CancellationToken stopping)
    {
        var toServer = ArrayPool<byte>.Shared.Rent(_options.BufferSize);
        var toClient = ArrayPool<byte>.Shared.Rent(_options.BufferSize);
        // Forwarding never blocks: on the event loop, each chunk goes on from the thread that saw it.
        _clientIo?.InlineCompletions = true;
        server.InlineCompletions = true;
        lock (_lock)
        {
            _pumping = true;
        }

        try
        {
            var fromServer = ServerToClientAsync(server, toClient, stopping);
            var fromClient = ClientToServerAsync(toServer);
            var first = await Task.WhenAny(fromServer, fromClient);

            // Either side ending ends the session: PostgreSQL has no half-closed connections.
            Abort(ConnectionOutcome.ClosedIdle);
            var clientReason = await fromClient;
            var serverReason = await fromServer;
            return first == fromServer ? serverReason : clientReason;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(toServer);
            ArrayPool<byte>.Shared.Return(toClient);
        }
    }

    private async Task<string> ClientToServerAsync(byte[] buffer)
    {
        try
        {
            while (true)
            {
                // ConfigureAwait(false) on the forwarding awaits: the proxy has no context to come back to,
                // and looking for one costs two thread-local reads per chunk.
                var read = await ReceiveFromClientAsync(buffer.AsMemory(), CancellationToken.None).ConfigureAwait(false);
                if (read == 0)
                {
                    return "client closed";
                }

                ServerLink? server;
                Task? moved = null;
                lock (_lock)
                {
                    if (_closing)
                    {
                        // Drained: nothing more from this client reaches the server.
                        return "drained";
                    }

                    var messages = new ClientMessages { Unsynced = _unsynced };
                    _clientFramer.Scan(buffer.AsSpan(0, read), ref messages);
                    _pendingSyncs += messages.Syncs;
                    _unsynced = messages.Unsynced;
                    _clientPartial = _clientFramer.InMessage;
                    server = _server;
                    _clientReads++;
                    if (_readingAhead)
                    {
                        // The state query is on the server: what the client sends goes after its answer.
                        moved = _readAheadDone!.Task; // set with _readingAhead
                    }
                    else if (_moving)
                    {
                        // The session is on its way to the new target: what the client sends now
                        // is for the session there, and its login goes before idle sessions'.
                        moved = _moved.Task;
                        if (_moveWait == MoveWait.Idle)
                        {
                            _moveWait = MoveWait.Waiting;
                            _endpoint.MoveWaiting();
                            _clientSent!.TrySetResult(); // set with _moveWait = Idle
                        }
                    }
                }

                _endpoint.CountFromClient(read);
                if (moved is not null)
                {
                    await moved;
                    lock (_lock)
                    {
                        if (_closing)
                        {
                            return "closed while moving";
                        }

                        server = _server;
                    }
                }

                await server!.SendAllAsync(buffer.AsMemory(0, read)).ConfigureAwait(false); // Set before the pumps start; replaced, never cleared.
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
        {
            return "client side closed";
        }
        catch (InvalidDataException ex)
        {
            // Caught here rather than above: both pumps must end normally before the buffers go
            // back to the pool.
            return $"protocol error from client: {ex.Message}";
        }
    }

    private async Task<string> ServerToClientAsync(ServerLink server, byte[] buffer, CancellationToken stopping)
    {
        try
        {
            var carried = 0;
            while (true)
            {
                var read = carried > 0 ? carried : await server.ReceiveAsync(buffer.AsMemory(), CancellationToken.None).ConfigureAwait(false);
                carried = 0;
                if (read == 0)
                {
                    return "server closed";
                }

                // Set under the lock before the state query is sent, so before its answer can arrive.
                if (Volatile.Read(ref _readingAhead))
                {
                    carried = await FinishReadAheadAsync(server, buffer, read, stopping);
                    if (carried < 0)
                    {
                        return "drained between transactions";
                    }

                    continue;
                }

                if (Volatile.Read(ref _moving))
                {
                    // The answer to the state query sent when the session was found idle.
                    var next = await MoveAsync(server, buffer.AsMemory(0, read), stopping);
                    if (next is null)
                    {
                        return "closed for a switchover";
                    }

                    server = next;
                    server.InlineCompletions = true;
                    _serverFramer = default;
                    continue;
                }

                var messages = default(BackendMessages);
                _serverFramer.Scan(buffer.AsSpan(0, read), ref messages);
                if (messages.HasKey)
                {
                    BackendKey = messages.Key;
                    _endpoint.RegisterBackendKey(this, messages.Key, messages.Key);
                }

                Departure departure;
                lock (_lock)
                {
                    if (_closing)
                    {
                        return "closing";
                    }

                    _serverPartial = _serverFramer.InMessage;
                    if (messages.Ready > 0)
                    {
                        _pendingSyncs = Math.Max(0, _pendingSyncs - messages.Ready);
                        _status = messages.Status;
                        _idleReadies = messages.Status == (byte)'I' ? Math.Min(_idleReadies + messages.Ready, AutocommitReadies) : 0;
                        _lastReadyAt = Environment.TickCount64;
                    }

                    // A move is decided before the client sees the ReadyForQuery: what it sends
                    // next then waits for the new session instead of racing the state query to
                    // the old one. A close must wait until the client has its answer.
                    departure = _drainRequested ? TryDepartLocked(moveOnly: true) : Departure.None;
                    _writingToClient = true;
                }

                var queried = departure == Departure.Move;
                if (queried)
                {
                    await server.SendAllAsync(StateQuery(), stopping);
                }

                await SendToClientAllAsync(buffer.AsMemory(0, read)).ConfigureAwait(false);
                _endpoint.CountToClient(read);

                var readAhead = false;
                lock (_lock)
                {
                    _writingToClient = false;
                    if (departure == Departure.None && _drainRequested)
                    {
                        departure = TryDepartLocked();
                    }

                    readAhead = departure == Departure.None && _readAheadRequested && TryReadAheadLocked();
                }

                if (readAhead)
                {
                    await server.SendAllAsync(SessionSnapshot.QueryMessage, stopping);
                }

                if (departure == Departure.Close)
                {
                    await CloseBetweenTransactionsAsync();
                    return "drained between transactions";
                }

                if (departure == Departure.Move && !queried)
                {
                    await server.SendAllAsync(StateQuery(), stopping);
                }
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException or IOException)
        {
            return "server side closed";
        }
        catch (InvalidDataException ex)
        {
            return $"protocol error from server: {ex.Message}";
        }
    }

    /// <summary>
    /// Moves the session: reads its state on the server it leaves, ends that session, waits for
    /// the endpoint to resume and opens one on the route's target with the same state. Null when
    /// the session cannot move; the client then got 57P01, as a drain closes it.
    /// </summary>
    private async Task<ServerLink?> MoveAsync(ServerLink previous, ReadOnlyMemory<byte> received, CancellationToken stopping)
    {
        // Off the event loop: a move waits for the route and may run an auth query, which must
        // not stall the other connections the loop forwards for.
        previous.InlineCompletions = false;
        await Task.Yield();
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        lock (_lock)
        {
            if (_closing)
            {
                return null;
            }

            _cancelMove = cancel.Cancel;
        }

        try
        {
            return await MoveCoreAsync(previous, received, cancel.Token);
        }
        finally
        {
            lock (_lock)
            {
                _cancelMove = null;
                if (_departedAgain)
                {
                    // Landed and left again (a later pause's drain): the wait is the next move's now.
                    _departedAgain = false;
                }
                else
                {
                    EndMoveWaitLocked();
                }
            }
        }
    }

    /// <summary>
    /// Before the pause: logs a server session in on <paramref name="target"/>, green still
    /// fenced, through <paramref name="socket"/> (peer authentication of Teal's own OS user, so
    /// no password is involved), with the client's startup packet, for the move to take at the
    /// drain. Null when the session could not move anyway or has such a login already.
    /// </summary>
    internal Task<LoggedInSession?>? LogInBeforePause(EndpointTarget target, string socket, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (_closing || _moving || !Movable || _startup.Length == 0 || _loggedInBeforePause is not null)
            {
                return null;
            }

            _loggedInBeforePause = LogInOnSocketAsync(target, socket, cancellationToken);
            return _loggedInBeforePause;
        }
    }

    private async Task<LoggedInSession?> LogInOnSocketAsync(EndpointTarget target, string socket, CancellationToken cancellationToken)
    {
        await Task.Yield(); // Off the caller's lock and thread: a login is a round trip to a process starting.
        var (session, failure) = await SessionMover.LogInAsync(target, _startup, null, null, _options, _endpoint.Plaintext, beforeResume: true, cancellationToken, socket, _clientIo);
        if (failure is not null)
        {
            _endpoint.OnLoginBeforePauseFailed(this, target, failure);
        }

        return session;
    }

    /// <summary>Closes the session logged in ahead of the pause, if any and not taken by a move.</summary>
    internal void DropLoginBeforePause()
    {
        Task<LoggedInSession?>? login;
        lock (_lock)
        {
            login = _loggedInBeforePause;
            _loggedInBeforePause = null;
        }

        if (login is not null)
        {
            CloseWhenLoggedIn(login);
        }
    }

    private static void CloseWhenLoggedIn(Task<LoggedInSession?> login) =>
        login.ContinueWith(static t => t.Result?.Dispose(), CancellationToken.None, TaskContinuationOptions.OnlyOnRanToCompletion, TaskScheduler.Default);

    /// <summary>Takes the login made before the pause, if any, for the move to wait on.</summary>
    private Task<LoggedInSession?>? TakeLoginBeforePause()
    {
        lock (_lock)
        {
            var login = _loggedInBeforePause;
            _loggedInBeforePause = null;
            return login;
        }
    }

    private async Task<ServerLink?> MoveCoreAsync(ServerLink previous, ReadOnlyMemory<byte> received, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        var snapshot = await SessionSnapshot.ReadAsync(new MessageReader(previous.ReceiveAsync, received), SendToClientAsync, cancellationToken);
        if (_moveWithReadAhead && snapshot is { Blockers.Count: 0 })
        {
            // The answer to an empty query: the client has sent nothing since the state was read
            // ahead of the pause, so that state is the session's.
            snapshot = _readAhead;
        }
        if (snapshot is null || snapshot.Blockers.Count > 0)
        {
            var why = snapshot is null ? "its server closed the connection" : string.Join(", ", snapshot.Blockers);
            await CloseForSwitchoverAsync(previous, why);
            return null;
        }

        // The session leaves its server now, inside the drain: the switchover fences that server
        // next, and must find no client session there.
        await previous.SendQuietlyAsync(PostgresWire.Terminate.ToArray());
        previous.ShutdownQuietly();
        lock (_lock)
        {
            _leftServer = true;
            _drained?.TrySetResult(ConnectionOutcome.Moving);
        }

        var left = Stopwatch.GetTimestamp();

        // A captured login yields a ClientKey only for the very verifier the client proved itself
        // against, and the switchover copies blue's verifiers to green before it opens: when the
        // proxy checked the password itself, that verifier is the one to log in with, and reading
        // green's (an auth query: a connection and a round trip inside the gap) could only give
        // the same one or one the move cannot use. Green's server checks the proof either way.
        var known = _loginVerifier;
        Func<EndpointTarget, Func<string, CancellationToken, Task<ScramVerifier?>>?> verifierOn = on => _scram is null
            ? null
            : (role, ct) => known is not null ? Task.FromResult<ScramVerifier?>(known) : _endpoint.VerifierAsync(on, role, ct);

        // The client's go-ahead is the resume. Meanwhile, once green's logins are back (the
        // switchover's open-green says so, after the flip), the session logs in there, so that at
        // the resume only its state is left to replay; nothing of the client's is sent before.
        var routing = TakeRouteAsync(cancellationToken);

        // When the route came, even while a login started before it was still running: the time
        // from there to the session's first byte on green is this session's share of the gap.
        var resumed = routing.ContinueWith(static _ => Stopwatch.GetTimestamp(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        LoggedInSession? ahead = null;
        MovedSession? replayed = null; // logged in and replayed ahead of the resume
        EndpointTarget? replayedOn = null;
        var loginsOpened = 0L;
        try
        {
            // Logged in on green before the pause: nothing left to wait for but the route. A login
            // still under way when the route comes is left to close itself; the session logs in anew.
            if (TakeLoginBeforePause() is { } beforePause)
            {
                await Task.WhenAny(beforePause, routing);
                if (beforePause.IsCompletedSuccessfully)
                {
                    ahead = beforePause.Result;
                }
                else
                {
                    CloseWhenLoggedIn(beforePause);
                }
            }

            var loggedInBeforePause = ahead is not null;
            if (loggedInBeforePause)
            {
                EndMoveWait();
            }

            var loginAhead = _endpoint.LoginAheadAsync();
            if (ahead is null && await Task.WhenAny(routing, loginAhead) == loginAhead && await loginAhead is { } early && !routing.IsCompleted)
            {
                loginsOpened = Stopwatch.GetTimestamp();
                await IdleLoginTurnAsync(cancellationToken);
                var (session, failure) = await SessionMover.LogInAsync(early, _startup, _scram, verifierOn(early), _options, _endpoint.Plaintext, beforeResume: true, cancellationToken, near: _clientIo);
                EndMoveWait();
                ahead = session;
                if (failure is not null)
                {
                    // Logged in again at the resume: a failure here may be a moment too early.
                    _endpoint.OnLoginAheadFailed(this, early, failure);
                }
            }

            if (ahead is not null && !routing.IsCompleted)
            {
                // Logged in ahead of the resume: the state goes there now as well, so that the
                // resume finds the session ready. The replay is the new backend's first work
                // (its catalog caches filled, the client's statements parsed): tens of
                // milliseconds on a loaded machine, which otherwise fall after the resume, inside
                // the client's gap. None of it writes, so green's read-only default (its unfence
                // may still be running) refuses none of it. A replay that fails this early is
                // made again at the resume, on a new login.
                replayedOn = ahead.Target;
                var session = ahead;
                ahead = null; // The replay owns it now: it disposes it on failure.
                var replay = await SessionMover.ReplayAsync(session, snapshot, cancellationToken);
                replayed = replay.Server is null ? null : replay;
            }

            var target = await routing;
            var routed = Stopwatch.GetTimestamp();
            if (target is null)
            {
                await CloseForSwitchoverAsync(null, "the endpoint stayed paused past its hold deadline");
                return null;
            }

            if (ahead is not null && !SessionMover.SameServer(ahead.Target, target))
            {
                // The route moved on after the login: the session goes where the route says.
                ahead.Dispose();
                ahead = null;
            }

            if (replayed is not null && !SessionMover.SameServer(replayedOn!, target))
            {
                replayed.Server!.Dispose(); // Set: replayed is kept only when the replay succeeded.
                replayed = null;
            }

            var loggedInBeforeResume = ahead is not null || replayed is not null;
            var replayedBeforeResume = replayed is not null;
            loggedInBeforePause &= loggedInBeforeResume;
            if (ahead is null && replayed is null)
            {
                await IdleLoginTurnAsync(cancellationToken);
                var (session, failure) = await SessionMover.LogInAsync(target, _startup, _scram, verifierOn(target), _options, _endpoint.Plaintext, beforeResume: false, cancellationToken, near: _clientIo);
                EndMoveWait();
                if (session is null)
                {
                    await CloseForSwitchoverAsync(null, failure ?? "unknown");
                    return null;
                }

                ahead = session;
            }

            MovedSession moved;
            if (replayed is not null)
            {
                moved = replayed;
                replayed = null; // Handed on with the move.
            }
            else
            {
                var loggedIn = ahead!; // Logged in above when nothing was replayed ahead.
                ahead = null; // The replay owns it now: it disposes it on failure.
                moved = await SessionMover.ReplayAsync(loggedIn, snapshot, cancellationToken);
            }

            if (moved.Server is not { } server)
            {
                await CloseForSwitchoverAsync(null, moved.Failure ?? "unknown");
                return null;
            }

            return await ContinueAsync(previous, server, target, moved, new MoveTimings(
                Stopwatch.GetElapsedTime(started, left).TotalMilliseconds,
                Stopwatch.GetElapsedTime(left, routed).TotalMilliseconds,
                moved.LoginMilliseconds,
                moved.ReplayMilliseconds)
            {
                LoggedInBeforeResume = loggedInBeforeResume,
                LoggedInBeforePause = loggedInBeforePause,
                ReplayedBeforeResume = replayedBeforeResume,
                BoundaryMs = _drainRequestedAt == 0 ? 0 : Stopwatch.GetElapsedTime(_drainRequestedAt, _departedAt).TotalMilliseconds,
                StateReadMs = Stopwatch.GetElapsedTime(_departedAt, started).TotalMilliseconds,
                StateReadAhead = _moveWithReadAhead,
                LoginsOpenedMs = loginsOpened == 0 ? 0 : Stopwatch.GetElapsedTime(left, loginsOpened).TotalMilliseconds,
                ReadyAfterResumeMs = Stopwatch.GetElapsedTime(resumed.IsCompletedSuccessfully ? resumed.Result : routed).TotalMilliseconds,
            });
        }
        finally
        {
            ahead?.Dispose();
            replayed?.Server?.Dispose();
        }
    }

    /// <summary>
    /// The route's target once the endpoint resumes, taken under this connection's lock (see
    /// <see cref="RequestDrain"/>); null when the pause outlives its hold deadline.
    /// </summary>
    private async Task<EndpointTarget?> TakeRouteAsync(CancellationToken cancellationToken)
    {
        while (true)
        {
            lock (_lock)
            {
                if (_endpoint.TryTakeRoute(out var target))
                {
                    _routeTaken = true;
                    return target;
                }
            }

            if (!await _endpoint.WaitForResumeAsync(cancellationToken))
            {
                return null;
            }
        }
    }

    /// <summary>The session goes on on <paramref name="server"/>: the pumps take it from here.</summary>
    private async Task<ServerLink?> ContinueAsync(ServerLink previous, ServerLink server, EndpointTarget target, MovedSession moved, MoveTimings timings)
    {
        var departure = Departure.None;
        lock (_lock)
        {
            if (_closing)
            {
                server.Dispose();
                return null;
            }

            previous.Dispose();
            _server = server;
            _readAhead = null;
            _moving = false;
            _leftServer = false;
            _routeTaken = false;
            _outcome = ConnectionOutcome.Open;
            Target = target;

            // A later pause's drain came while landing: leave again now if the session is between
            // transactions (nothing of the client's waits), else at its next boundary, as the
            // server pump does for any drained session.
            _drainRequested = _drainWhileLanding;
            _drainWhileLanding = false;
            if (_drainRequested)
            {
                departure = TryDepartLocked(moveOnly: true);
                _departedAgain = departure == Departure.Move;
            }
        }

        if (BackendKey is { } clientKey)
        {
            // The client keeps the key it got at login; its cancels now go to the new session.
            _endpoint.RegisterBackendKey(this, clientKey, moved.BackendKey);
        }

        // Before anything from the new session: the client learns the new server's reported
        // values (server_version above all) as a server reports a change, ahead of the answer
        // to its next query.
        foreach (var change in moved.ParameterChanges)
        {
            await SendToClientAsync(change);
        }

        _endpoint.OnSessionMoved(this, target, timings);
        if (departure == Departure.Move)
        {
            // Moving again: the client, if it sends meanwhile, waits for that move's end on the
            // same signal. The server pump reads the state query's answer on the new server.
            await server.SendAllAsync(StateQuery());
            return server;
        }

        var signal = _moved;
        _moved = NewSignal();
        signal.TrySetResult();
        return server;
    }

    private async Task SendToClientAsync(byte[] message)
    {
        await SendToClientAllAsync(message);
        _endpoint.CountToClient(message.Length);
    }

    /// <summary>A session that could not move gets 57P01 as a drain gives it: drivers reconnect.</summary>
    private async Task CloseForSwitchoverAsync(ServerLink? previous, string reason)
    {
        lock (_lock)
        {
            _closing = true;
            _outcome = ConnectionOutcome.ClosedIdle;
            _drained?.TrySetResult(ConnectionOutcome.ClosedIdle);
        }

        _endpoint.OnSessionNotMoved(this, reason);
        await SendToClientQuietlyAsync(_endpoint.DrainError);
        SocketIo.ShutdownQuietly(_client);
        if (previous is not null)
        {
            await previous.SendQuietlyAsync(PostgresWire.Terminate.ToArray());
            previous.ShutdownQuietly();
        }
    }

    /// <summary>
    /// Reads the session's state at its next transaction boundary, ahead of a switchover's pause
    /// (the endpoint's prepare): its client is held for that one query, as at a drain, then goes
    /// on on this server. A drain that finds the client has sent nothing since moves the session
    /// with that state after an empty query instead of reading it again: for a pool's idle
    /// connections the state reads (a few ms of server CPU each, all at once at the drain) leave
    /// the pause, and every other session's backend has its catalogs warm for the read in it.
    /// Completes when the state is read or the session cannot be read now.
    /// </summary>
    public Task RequestStateReadAhead()
    {
        ServerLink? server;
        Task done;
        lock (_lock)
        {
            if (_closing || _moving || _drainRequested || _readingAhead || !Movable)
            {
                return Task.CompletedTask;
            }

            _readAheadDone = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            done = _readAheadDone.Task;
            _readAheadRequested = true;
            if (!TryReadAheadLocked())
            {
                return done;
            }

            server = _server;
        }

        _ = server!.SendQuietlyAsync(SessionSnapshot.QueryMessage); // TryReadAheadLocked requires a server.
        return done;
    }

    /// <summary>At a transaction boundary with a read ahead asked for: the state query goes out now.</summary>
    private bool TryReadAheadLocked()
    {
        if (_closing || _moving || _readingAhead || _server is null || _writingToClient || _status != (byte)'I'
            || _pendingSyncs != 0 || _unsynced || _clientPartial || _serverPartial)
        {
            return false;
        }

        _readAheadRequested = false;
        _readingAhead = true;
        _clientReadsAtReadAhead = _clientReads;
        return true;
    }

    /// <summary>The read-ahead's answer; returns how many bytes after it are in <paramref name="buffer"/> for the pump (-1: the drain closed the connection).</summary>
    private async Task<int> FinishReadAheadAsync(ServerLink server, byte[] buffer, int read, CancellationToken stopping)
    {
        var reader = new MessageReader(server.ReceiveAsync, buffer.AsMemory(0, read).ToArray());
        var snapshot = await SessionSnapshot.ReadAsync(reader, SendToClientAsync, stopping);
        var rest = reader.Unread;
        rest.CopyTo(buffer);
        Departure departure;
        lock (_lock)
        {
            _readingAhead = false;
            _readAhead = snapshot is { Blockers.Count: 0 } ? snapshot : null;
            _readAheadDone!.TrySetResult(); // set with _readingAhead
            departure = _drainRequested && rest.Length == 0 ? TryDepartLocked() : Departure.None;
        }

        if (departure == Departure.Close)
        {
            await CloseBetweenTransactionsAsync();
            return -1;
        }

        if (departure == Departure.Move)
        {
            await server.SendAllAsync(StateQuery(), stopping);
        }

        return rest.Length;
    }

    /// <summary>What a departing session asks its server: its state, or nothing when it was read ahead.</summary>
    private byte[] StateQuery() => Volatile.Read(ref _moveWithReadAhead) ? EmptyQuery : SessionSnapshot.QueryMessage;

    private static readonly byte[] EmptyQuery = new MessageWriter().Query(string.Empty).ToArray();

    private bool Movable => (_scram is not null && _endpoint.HasAuthQuery) || _loggedInWithoutPassword;

    /// <summary>
    /// A session whose client has sent nothing since it was held logs in on the new server once
    /// the moving sessions whose clients wait have logged in (or as soon as its own client sends
    /// something). A server starts its session processes one at a time: a pool's idle connections
    /// logging in at once would hold back the sessions that have work waiting, and stretch the
    /// pause every one of those clients sees.
    /// </summary>
    private Task IdleLoginTurnAsync(CancellationToken cancellationToken)
    {
        Task clientSent;
        lock (_lock)
        {
            if (_moveWait != MoveWait.Idle)
            {
                return Task.CompletedTask;
            }

            clientSent = _clientSent!.Task; // set with _moveWait = Idle
        }

        return Task.WhenAny(clientSent, _endpoint.NoWaitingMovesAsync()).WaitAsync(cancellationToken);
    }

    private void EndMoveWait()
    {
        lock (_lock)
        {
            EndMoveWaitLocked();
        }
    }

    /// <summary>The move's login is over, or the move is: its client no longer goes before idle sessions.</summary>
    private void EndMoveWaitLocked()
    {
        if (_moveWait == MoveWait.Waiting)
        {
            _endpoint.MoveWaitingDone();
        }

        _moveWait = MoveWait.Done;
    }

    /// <summary>Where a moving session's client stands: silent since it was held, waiting with something sent, or logged in (or gone).</summary>
    private enum MoveWait
    {
        None,
        Idle,
        Waiting,
        Done,
    }

    private enum Departure
    {
        None,
        Close,
        Move,
    }

    /// <summary>
    /// Between transactions: the last ReadyForQuery said idle ('I'), every Query/Sync got its
    /// ReadyForQuery, no extended-protocol message waits for a Sync, no message is half received
    /// either way and nothing is being written to the client. Then the session moves, or is closed
    /// when its login gave the proxy no way to log in again. Or still logging in (no
    /// ReadyForQuery yet): no transaction can be open, and waiting for authentication and
    /// backend start would only lengthen the drain, so it is closed at once.
    /// </summary>
    private Departure TryDepartLocked(bool moveOnly = false)
    {
        if (_closing || _moving || _readingAhead || _server is null || _writingToClient)
        {
            return Departure.None;
        }

        var loggingIn = _status == 0;
        if (!loggingIn && (_status != (byte)'I' || _pendingSyncs != 0 || _unsynced || _clientPartial || _serverPartial))
        {
            return Departure.None;
        }

        if (loggingIn && _loginVerifier is not null)
        {
            // The proxy logs the client in itself (its password already proven): the server's
            // part takes milliseconds, and the session moves at its first ReadyForQuery.
            return Departure.None;
        }

        if (!loggingIn && ((_scram is not null && _endpoint.HasAuthQuery) || _loggedInWithoutPassword))
        {
            _moving = true;
            _outcome = ConnectionOutcome.Moving;
            _departedAt = Stopwatch.GetTimestamp();
            _moveWait = MoveWait.Idle;
            _clientSent = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _moveWithReadAhead = _readAhead is not null && _clientReads == _clientReadsAtReadAhead;
            return Departure.Move;
        }

        if (moveOnly)
        {
            return Departure.None;
        }

        _closing = true;
        _closedDuringLogin = loggingIn;
        _outcome = ConnectionOutcome.ClosedIdle;
        return Departure.Close;
    }

    private async Task CloseBetweenTransactionsAsync()
    {
        // Terminate lets the backend end the session as if the client had; the client gets
        // 57P01 admin_shutdown, which drivers and pools treat as "reconnect".
        ServerLink server;
        lock (_lock)
        {
            server = _server!; // TryDepartLocked requires a server socket.
            _drained?.TrySetResult(ConnectionOutcome.ClosedIdle);
        }

        _endpoint.OnSessionNotMoved(this, _closedDuringLogin ? "still logging in" : "its login left the proxy no way to log in again (md5 or cleartext password)");

        var error = _closedDuringLogin ? _endpoint.LoginDrainError : _endpoint.DrainError;
        // The client's error first: once the backend ends, the server pump aborts the connection
        // and disposes the client socket, and an error not yet sent by then is lost (the client
        // would see a reset instead of 57P01). Shut down after the send, the error goes out
        // before the FIN.
        await SendToClientQuietlyAsync(error);
        SocketIo.ShutdownQuietly(_client);
        await server.SendQuietlyAsync(PostgresWire.Terminate.ToArray());
        server.ShutdownQuietly();
    }

    private async Task<byte[]?> ReadStartupAsync(CancellationToken stopping)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        timeout.CancelAfter(_options.StartupTimeout);
        if (_options.Certificate is { } direct && await StartsWithTlsAsync(timeout.Token))
        {
            // A PostgreSQL 17 client with sslnegotiation=direct: TLS from the first byte, no
            // SSLRequest; the startup packet follows inside TLS.
            await StartTlsAsync(direct, directly: true, timeout.Token);
        }

        var header = new byte[8];
        while (true)
        {
            if (!await ReceiveExactlyFromClientAsync(header, timeout.Token))
            {
                return null;
            }

            var length = BinaryPrimitives.ReadInt32BigEndian(header);
            var code = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(4));
            if (length == 8 && code == PostgresWire.SslRequestCode && !Encrypted && _options.Certificate is { } certificate)
            {
                // 'S', then the TLS handshake; the startup packet follows inside TLS.
                await SendToClientAllAsync("S"u8.ToArray());
                await StartTlsAsync(certificate, directly: false, timeout.Token);
                continue;
            }

            if (length == 8 && code is PostgresWire.SslRequestCode or PostgresWire.GssEncRequestCode)
            {
                // No certificate (or GSS encryption, which the proxy does not speak): 'N' tells
                // the client to go on without encryption, as a server without SSL does.
                await SendToClientAllAsync("N"u8.ToArray());
                continue;
            }

            if (length < 8 || length > PostgresWire.MaxStartupPacket)
            {
                return null;
            }

            var packet = new byte[length];
            header.CopyTo(packet, 0);
            return await ReceiveExactlyFromClientAsync(packet.AsMemory(8), timeout.Token) ? packet : null;
        }
    }

    /// <summary>
    /// Whether the client's first byte opens a TLS handshake record (0x16), as PostgreSQL 17
    /// tells a direct TLS connection from a packet length: a startup packet's length (at most
    /// 10 000 bytes) never starts with that byte. Peeked, so the handshake reads it again.
    /// </summary>
    private async Task<bool> StartsWithTlsAsync(CancellationToken cancellationToken)
    {
        var first = new byte[1];
        return await PeekClientAsync(first, cancellationToken) == 1 && first[0] == PostgresWire.TlsHandshakeRecord;
    }

    /// <summary>What the client has sent, left in the socket for the next read (raw bytes, under TLS too).</summary>
    private async ValueTask<int> PeekClientAsync(Memory<byte> buffer, CancellationToken cancellationToken) =>
        _clientIo is { } io ? await io.PeekAsync(buffer, cancellationToken) : await _client.ReceiveAsync(buffer, SocketFlags.Peek, cancellationToken);

    /// <summary>
    /// The client's TLS handshake with <paramref name="certificate"/>. A client offering ALPN
    /// without "postgresql" fails it (PostgreSQL 17 sends the same alert); a connection that
    /// starts with TLS (<paramref name="directly"/>) must have agreed on "postgresql", as
    /// PostgreSQL 17 requires: nothing else tells it apart from another protocol's TLS sent to this port.
    /// </summary>
    private async Task StartTlsAsync(X509Certificate2 certificate, bool directly, CancellationToken cancellationToken)
    {
        bool postgresAlpn;
        if (_clientIo is { } io && OpenSslContext.ForServer(certificate) is { } openSsl)
        {
            // On the event loop OpenSSL reads and writes the socket itself, as PgBouncer's does.
            await io.StartTlsAsync(openSsl, cancellationToken);
            postgresAlpn = io.AgreedPostgresAlpn;
        }
        else
        {
            _tls = new SslStream(_clientIo?.AsStream() ?? new NetworkStream(_client, ownsSocket: false));
            await _tls.AuthenticateAsServerAsync(
                new SslServerAuthenticationOptions { ServerCertificate = certificate, ApplicationProtocols = [PostgresWire.Alpn] },
                cancellationToken);
            postgresAlpn = _tls.NegotiatedApplicationProtocol == PostgresWire.Alpn;
        }

        if (directly && !postgresAlpn)
        {
            throw new AuthenticationException("the client started TLS directly without agreeing on ALPN \"postgresql\" (PostgreSQL 17 refuses such a connection too)");
        }
    }

    /// <summary>
    /// Connects to <paramref name="target"/>, or, when a drain came meanwhile (<see cref="_readmit"/>),
    /// to where the pause's route goes once the endpoint admits again; <see cref="Target"/> is
    /// where it connected.
    /// </summary>
    private async Task<ServerLink?> ConnectAsync(EndpointTarget target, CancellationToken stopping)
    {
        var server = new ServerLink(_clientIo);
        while (true)
        {
            lock (_lock)
            {
                if (_closing)
                {
                    // Cut (drain budget or stop) while it was being admitted: never reach the server.
                    server.Dispose();
                    return null;
                }

                if (!_readmit)
                {
                    _server = server;
                    break;
                }

                _readmit = false;
            }

            if (await AdmitAsync(stopping) is not { } next)
            {
                server.Dispose();
                await SendToClientQuietlyAsync(_endpoint.PausedError);
                return null;
            }

            Target = target = next;
        }

        if (await server.OpenAsync(target, _options, stopping, _endpoint.Plaintext) is not { } reason)
        {
            return server;
        }

        _endpoint.OnUpstreamConnectFailed(target, reason);
        await SendToClientQuietlyAsync(PostgresWire.FatalError(
            PostgresWire.ConnectionFailure, $"Teal endpoint {_endpoint.Name} could not reach instance {target.Instance} at {target.Host}:{target.Port}: {reason}"));
        return null;
    }

    private ValueTask<int> ReceiveFromClientAsync(Memory<byte> buffer, CancellationToken cancellationToken) =>
        _tls is not null ? _tls.ReadAsync(buffer, cancellationToken)
        : _clientIo is not null ? _clientIo.ReceiveAsync(buffer, cancellationToken)
        : _client.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);

    private async Task<bool> ReceiveExactlyFromClientAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        while (buffer.Length > 0)
        {
            var read = await ReceiveFromClientAsync(buffer, cancellationToken);
            if (read == 0)
            {
                return false;
            }

            buffer = buffer[read..];
        }

        return true;
    }

    // Not async itself: on the event loop a send that completes at once builds no state machine
    // (over TLS too: SslStream's write completes at once when the socket takes the record).
    private ValueTask SendToClientAllAsync(ReadOnlyMemory<byte> data) =>
        _tls is not null ? _tls.WriteAsync(data)
        : _clientIo is not null ? _clientIo.SendAllAsync(data)
        : SocketIo.SendAllAsync(_client, data);

    private async Task SendToClientQuietlyAsync(byte[] data)
    {
        try
        {
            await SendToClientAllAsync(data);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
        {
            // The peer is gone already; there is nobody left to tell.
        }
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

}
