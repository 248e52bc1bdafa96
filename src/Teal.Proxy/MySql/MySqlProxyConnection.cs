using System.Buffers;
using System.Net.Sockets;
using System.Security.Authentication;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;

namespace Teal.Proxy.MySql;

/// <summary>
/// One MySQL-protocol client connection. The server speaks first, so the connection is admitted
/// (or held, while the endpoint is paused) as soon as it is accepted, connects to the route and
/// relays the server's greeting — without compression, which would hide the packets, and with
/// TLS offered only when the endpoint has a certificate: the client's TLS ends here, and the
/// proxy starts its own with a server that offers it — and the client's login. Both pumps then
/// follow packet boundaries and each command's response (<see cref="MySqlSession"/>), so a drain
/// closes the connection only when it is idle outside a transaction, or still logging in.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001", Justification = "RunAsync disposes both legs as it ends: the connection's lifetime is RunAsync, not a using scope")]
internal sealed class MySqlProxyConnection : IEndpointConnection
{
    private readonly ProxyEndpoint _endpoint;
    private readonly MySqlLeg _client;
    private readonly ProxyOptions _options;

    // Session state shared by the two pumps and a drain; every read and write is under _lock.
    private readonly Lock _lock = new();
    private readonly MySqlSession _session = new();
    private readonly MySqlPacketScanner _fromClient = new();
    private readonly MySqlPacketScanner _fromServer = new();
    private bool _writingToClient;
    private bool _drainRequested;
    private bool _closing;
    private ConnectionOutcome _outcome;
    private MySqlLeg? _server;

    // Counted against the endpoint's cap; RunAsync's own.
    private bool _slot;

    public MySqlProxyConnection(ProxyEndpoint endpoint, Socket client, long id, ProxyOptions options)
    {
        _endpoint = endpoint;
        _client = new MySqlLeg(client);
        Id = id;
        _options = options;
    }

    public long Id { get; }

    public bool Admitted { get; set; }

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

    public Task Completion { get; set; } = Task.CompletedTask;

    public async Task RunAsync(CancellationToken stopping)
    {
        var reason = "client closed";
        try
        {
            if (!_endpoint.TryTakeSlot())
            {
                // Instead of the greeting, as a server at max_connections answers.
                await _client.SendQuietlyAsync(MySqlWire.Error(0, MySqlWire.ErConCount, "08004", $"Teal endpoint {_endpoint.Name} has reached its limit of {_options.MaxConnections} connections", withSqlState: false));
                reason = "over the endpoint's connection cap";
                return;
            }

            _slot = true;
            var target = await _endpoint.AdmitAsync(this, (buffer, ct) => _client.Socket.ReceiveAsync(buffer, SocketFlags.Peek, ct), stopping);
            if (target is null)
            {
                await _client.SendQuietlyAsync(MySqlWire.Error(0, MySqlWire.ErServerShutdown, "08S01", $"Teal endpoint {_endpoint.Name} is paused for a switchover; retry", withSqlState: false));
                reason = "held past the pause deadline";
                return;
            }

            Target = target;
            var server = await ConnectAsync(target, stopping);
            if (server is null)
            {
                reason = "could not reach the target";
                return;
            }

            reason = await LoginAsync(server, target, stopping) ?? await PumpAsync(server);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException or IOException)
        {
            reason = ex.Message;
        }
        finally
        {
            Abort(ConnectionOutcome.ClosedIdle);
            _client.Dispose();
            _server?.Dispose();
            if (_slot)
            {
                _endpoint.ReleaseSlot();
            }

            _endpoint.OnConnectionEnded(this, reason);
        }
    }

    /// <summary>
    /// Closes the connection at its next transaction boundary (now, if it is there) and completes
    /// with how it left once it has: MySQL sessions cannot move, so a drained one always closes.
    /// </summary>
    public async Task<ConnectionOutcome> RequestDrain()
    {
        bool closeNow;
        lock (_lock)
        {
            _drainRequested = true;
            closeNow = TryBeginCloseLocked();
        }

        if (closeNow)
        {
            _ = CloseBetweenTransactionsAsync();
        }

        // RunAsync ends every path in Abort, so Completion ends once the connection has left.
        await Completion.ConfigureAwait(false);
        return Outcome == ConnectionOutcome.Open ? ConnectionOutcome.ClosedIdle : Outcome;
    }

    /// <summary>
    /// The close alone: a MySQL client reads a server's packet only as the answer to its own
    /// command, so it learns of the cut at its next one, as of a connection its server killed.
    /// </summary>
    public void Cut(CutReason reason) => Abort(ConnectionOutcome.ClosedAtDeadline);

    private void Abort(ConnectionOutcome outcome)
    {
        MySqlLeg? server;
        lock (_lock)
        {
            _closing = true;
            if (_outcome == ConnectionOutcome.Open)
            {
                _outcome = outcome;
            }

            server = _server;
        }

        _client.Close();
        server?.Close();
    }

    /// <summary>
    /// Passes the server's greeting on without the capabilities the proxy cannot relay (TLS
    /// offered instead when the endpoint has a certificate), ends the client's TLS when it asks,
    /// starts the proxy's own with a server that offers it (as the endpoint's server TLS mode
    /// says), and passes the client's answer on, refusing one that asks for what the proxy
    /// cannot relay. Null when the pumps take over; otherwise why it ended.
    /// </summary>
    private async Task<string?> LoginAsync(MySqlLeg server, EndpointTarget target, CancellationToken stopping)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        timeout.CancelAfter(_options.StartupTimeout);
        var greeting = await server.ReceivePacketAsync(timeout.Token);
        if (greeting is null)
        {
            return "server closed before its greeting";
        }

        var certificate = _options.Certificate;
        var serverCapabilities = MySqlWire.StripHandshakeCapabilities(greeting.AsSpan(MySqlWire.HeaderSize), offerTls: certificate is not null);
        if (serverCapabilities is null)
        {
            await _client.SendAsync(greeting);
            return "server refused the connection";
        }

        var serverTls = _options.ServerTls != ServerTlsMode.Disable && (serverCapabilities.Value & MySqlWire.ClientSsl) != 0;
        if (!serverTls && _options.ServerTls is ServerTlsMode.Require or ServerTlsMode.VerifyFull)
        {
            _endpoint.OnUpstreamConnectFailed(target, $"the server does not offer TLS, and the endpoint's server TLS mode is {_options.ServerTls.ToString().ToLowerInvariant()}");
            await _client.SendQuietlyAsync(MySqlWire.Error(0, MySqlWire.ErServerShutdown, "08S01",
                $"Teal endpoint {_endpoint.Name}: instance {target.Instance} at {target.Host}:{target.Port} does not offer TLS, and the endpoint's server TLS mode is {_options.ServerTls.ToString().ToLowerInvariant()}", withSqlState: false));
            return "the server offers no TLS";
        }

        await _client.SendAsync(greeting);
        _endpoint.CountToClient(greeting.Length);
        var answer = await _client.ReceivePacketAsync(timeout.Token);
        if (answer is null)
        {
            return "client left during login";
        }

        _endpoint.CountFromClient(answer.Length);
        var clientCapabilities = MySqlWire.ClientCapabilities(answer.AsSpan(MySqlWire.HeaderSize)) ?? 0;
        if ((clientCapabilities & MySqlWire.ClientSsl) != 0 && certificate is not null && answer.Length == MySqlWire.HeaderSize + MySqlWire.SslRequestLength)
        {
            // The SSL request: the first fields of the answer, the rest follows over TLS.
            try
            {
                await _client.AcceptTlsAsync(certificate, timeout.Token);
            }
            catch (AuthenticationException ex)
            {
                return $"TLS handshake with the client failed: {ex.Message}";
            }

            answer = await _client.ReceivePacketAsync(timeout.Token);
            if (answer is null)
            {
                return "client left during login";
            }

            _endpoint.CountFromClient(answer.Length);
            clientCapabilities = (MySqlWire.ClientCapabilities(answer.AsSpan(MySqlWire.HeaderSize)) ?? 0) & ~MySqlWire.ClientSsl;
        }
        else if (_options.RequireTls)
        {
            await _client.SendQuietlyAsync(MySqlWire.Error((byte)(answer[3] + 1), MySqlWire.ErSecureTransportRequired, "08004",
                $"Teal endpoint {_endpoint.Name} accepts only TLS connections; connect with TLS (ssl-mode=REQUIRED, --ssl, SslMode=Required)", withSqlState: true));
            return "refused: no TLS";
        }

        if ((clientCapabilities & (MySqlWire.ClientSsl | MySqlWire.ClientCompress)) != 0 || (clientCapabilities & MySqlWire.ClientProtocol41) == 0)
        {
            // The greeting offered no compression (and TLS only with a certificate); a client
            // asking for them anyway (or speaking the pre-4.1 protocol) cannot be relayed packet by packet.
            await _client.SendQuietlyAsync(MySqlWire.Error((byte)(answer[3] + 1), MySqlWire.ErNotSupportedYet, "08004",
                $"Teal endpoint {_endpoint.Name} relays the MySQL protocol 4.1 without compression{(certificate is null ? " or TLS" : "")}; connect without {(certificate is null ? "them" : "it")}", withSqlState: true));
            return "client asked for TLS, compression or an old protocol";
        }

        lock (_lock)
        {
            _session.Negotiated(serverCapabilities.Value & clientCapabilities);
        }

        if (serverTls && await StartServerTlsAsync(server, target, answer, clientCapabilities, timeout.Token) is { } failed)
        {
            _endpoint.OnUpstreamConnectFailed(target, $"TLS with the server failed: {failed}");
            await _client.SendQuietlyAsync(MySqlWire.Error((byte)(answer[3] + 1), MySqlWire.ErServerShutdown, "08S01",
                $"Teal endpoint {_endpoint.Name}: TLS with instance {target.Instance} at {target.Host}:{target.Port} failed: {failed}", withSqlState: true));
            return $"TLS with the server failed: {failed}";
        }

        // The server numbers the answer after its greeting, or after the proxy's SSL request.
        var clientSequence = answer[3];
        MySqlWire.SetClientCapabilities(answer.AsSpan(MySqlWire.HeaderSize), serverTls ? clientCapabilities | MySqlWire.ClientSsl : clientCapabilities);
        answer[3] = (byte)(serverTls ? 2 : 1);
        await server.SendAsync(answer);
        var shift = (byte)(clientSequence - answer[3]);
        return shift == 0 ? null : await RelayLoginAsync(server, shift, timeout.Token);
    }

    /// <summary>
    /// The proxy's SSL request to the server (the client's capabilities, as its own would be)
    /// and the handshake as <see cref="ServerTlsMode"/> says; null when done, else why not.
    /// </summary>
    private async Task<string?> StartServerTlsAsync(MySqlLeg server, EndpointTarget target, byte[] answer, uint clientCapabilities, CancellationToken cancellationToken)
    {
        var request = new byte[MySqlWire.HeaderSize + MySqlWire.SslRequestLength];
        MySqlWire.WriteHeader(request, MySqlWire.SslRequestLength, 1);
        answer.AsSpan(MySqlWire.HeaderSize, MySqlWire.SslRequestLength).CopyTo(request.AsSpan(MySqlWire.HeaderSize));
        MySqlWire.SetClientCapabilities(request.AsSpan(MySqlWire.HeaderSize), clientCapabilities | MySqlWire.ClientSsl);
        await server.SendAsync(request);
        try
        {
            await server.StartTlsAsync(ServerLink.ClientOptions(target, _options), cancellationToken);
            return null;
        }
        catch (Exception ex) when (ex is AuthenticationException or IOException)
        {
            return ex.Message;
        }
    }

    /// <summary>
    /// The rest of a login whose two sides number its packets differently: a client on TLS
    /// counted its SSL request, which the server never saw, and the server counted the proxy's
    /// own, which the client never sent. Each packet is renumbered on its way, up to the server's
    /// OK (the pumps take over: commands number from 0 on both sides) or ERR. Null when logged
    /// in; otherwise why it ended.
    /// </summary>
    private async Task<string?> RelayLoginAsync(MySqlLeg server, byte shift, CancellationToken cancellationToken)
    {
        while (true)
        {
            var packet = await server.ReceivePacketAsync(cancellationToken);
            if (packet is null)
            {
                return "server closed during login";
            }

            packet[3] += shift;
            await _client.SendAsync(packet);
            _endpoint.CountToClient(packet.Length);
            var payload = packet.AsSpan(MySqlWire.HeaderSize);
            switch (payload.IsEmpty ? (byte)0 : payload[0])
            {
                case MySqlWire.Ok:
                    lock (_lock)
                    {
                        _fromServer.Scan(packet, new ServerPackets(_session));
                    }

                    return null;
                case MySqlWire.Err:
                    return "the server refused the login";
                case MySqlWire.AuthMoreData when payload.Length == 2 && payload[1] == MySqlWire.FastAuthSuccess:
                    // caching_sha2_password's cached login: its OK follows unasked.
                    continue;
            }

            // An authentication switch or a plugin's question: the client answers it.
            var reply = await _client.ReceivePacketAsync(cancellationToken);
            if (reply is null)
            {
                return "client left during login";
            }

            _endpoint.CountFromClient(reply.Length);
            reply[3] -= shift;
            await server.SendAsync(reply);
        }
    }

    private async Task<string> PumpAsync(MySqlLeg server)
    {
        var toServer = ArrayPool<byte>.Shared.Rent(_options.BufferSize);
        var toClient = ArrayPool<byte>.Shared.Rent(_options.BufferSize);
        try
        {
            var fromServer = ServerToClientAsync(server, toClient);
            var fromClient = ClientToServerAsync(server, toServer);
            var first = await Task.WhenAny(fromServer, fromClient);

            // Either side ending ends the session: a MySQL session has no half-closed state.
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

    private async Task<string> ClientToServerAsync(MySqlLeg server, byte[] buffer)
    {
        try
        {
            while (true)
            {
                var read = await _client.ReceiveAsync(buffer.AsMemory());
                if (read == 0)
                {
                    return "client closed";
                }

                lock (_lock)
                {
                    if (_closing)
                    {
                        // Drained: nothing more from this client reaches the server.
                        return "drained";
                    }

                    _fromClient.Scan(buffer.AsSpan(0, read), new ClientPackets(_session));
                }

                _endpoint.CountFromClient(read);
                await server.SendAsync(buffer.AsMemory(0, read));
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
        {
            return "client side closed";
        }
    }

    private async Task<string> ServerToClientAsync(MySqlLeg server, byte[] buffer)
    {
        try
        {
            while (true)
            {
                var read = await server.ReceiveAsync(buffer.AsMemory());
                if (read == 0)
                {
                    return "server closed";
                }

                lock (_lock)
                {
                    if (_closing)
                    {
                        return "closing";
                    }

                    _fromServer.Scan(buffer.AsSpan(0, read), new ServerPackets(_session));
                    _writingToClient = true;
                }

                await _client.SendAsync(buffer.AsMemory(0, read));
                _endpoint.CountToClient(read);

                bool closeNow;
                lock (_lock)
                {
                    _writingToClient = false;
                    closeNow = _drainRequested && TryBeginCloseLocked();
                }

                if (closeNow)
                {
                    await CloseBetweenTransactionsAsync();
                    return "drained between transactions";
                }
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
        {
            return "server side closed";
        }
    }

    /// <summary>
    /// Idle outside a transaction: logged in, every command answered in full, no packet half
    /// received either way, nothing being written to the client, and the server's last status
    /// without SERVER_STATUS_IN_TRANS. Or still logging in: no transaction can be open yet.
    /// </summary>
    private bool TryBeginCloseLocked()
    {
        if (_closing || _writingToClient)
        {
            return false;
        }

        if (_session.Authenticated && (!_session.AwaitingNothing || _session.InTransaction || _fromClient.InPacket || _fromServer.InPacket))
        {
            return false;
        }

        _closing = true;
        _outcome = ConnectionOutcome.ClosedIdle;
        return true;
    }

    private async Task CloseBetweenTransactionsAsync()
    {
        MySqlLeg? server;
        bool loggedIn;
        lock (_lock)
        {
            server = _server;
            loggedIn = _session.Authenticated;
        }

        // MySQL has nothing like PostgreSQL's admin_shutdown notice for an idle client (an
        // unasked packet would be read as the answer to its next command), so the client sees
        // the connection end and reconnects, through the endpoint, to the new route. The server
        // gets COM_QUIT, as if the client had left.
        SocketIo.ShutdownQuietly(_client.Socket);
        if (server is not null)
        {
            if (loggedIn)
            {
                await server.SendQuietlyAsync(MySqlWire.Quit);
            }

            SocketIo.ShutdownQuietly(server.Socket);
        }

        if (!loggedIn)
        {
            // Mid-login the relay may sit in a login read that no shutdown ends on its own.
            Abort(ConnectionOutcome.ClosedIdle);
        }
    }

    private async Task<MySqlLeg?> ConnectAsync(EndpointTarget target, CancellationToken stopping)
    {
        var server = new MySqlLeg(new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true });
        lock (_lock)
        {
            if (_closing)
            {
                // Cut (drain or stop) while it was being admitted: never reach the server.
                server.Dispose();
                return null;
            }

            _server = server;
        }

        if (await SocketIo.ConnectAsync(server.Socket, target, _options.ConnectTimeout, stopping) is not { } reason)
        {
            return server;
        }

        _endpoint.OnUpstreamConnectFailed(target, reason);
        await _client.SendQuietlyAsync(MySqlWire.Error(0, MySqlWire.ErServerShutdown, "08S01",
            $"Teal endpoint {_endpoint.Name} could not reach instance {target.Instance} at {target.Host}:{target.Port}: {reason}", withSqlState: false));
        return null;
    }

    private readonly struct ClientPackets(MySqlSession session) : IMySqlPacketSink
    {
        public void OnPacket(in MySqlPacket packet) => session.OnClientPacket(packet);
    }

    private readonly struct ServerPackets(MySqlSession session) : IMySqlPacketSink
    {
        public void OnPacket(in MySqlPacket packet) => session.OnServerPacket(packet);
    }
}
