using System.Buffers;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;

namespace Teal.Proxy.MySql;

/// <summary>
/// One MySQL-protocol client connection. The server speaks first, so the connection is admitted
/// (or held, while the endpoint is paused) as soon as it is accepted, connects to the route and
/// relays the server's greeting — without compression, which would hide the packets, and with
/// TLS offered only when the endpoint has a certificate: TLS then ends here — and the client's
/// login. Both pumps then follow packet boundaries and each command's response
/// (<see cref="MySqlSession"/>), so a drain closes the connection only when it is idle outside a
/// transaction, or still logging in.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001", Justification = "RunAsync disposes the TLS stream as it ends: the connection's lifetime is RunAsync, not a using scope")]
internal sealed class MySqlProxyConnection : IEndpointConnection
{
    /// <summary>A greeting or login packet larger than this is not one (connection attributes included).</summary>
    private const int MaxLoginPacket = 1024 * 1024;

    private readonly ProxyEndpoint _endpoint;
    private readonly Socket _client;
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
    private Socket? _server;

    // The client's TLS, once its SSL request was answered; null for a plaintext client. Set
    // during login, before the pumps start, and read by them only.
    private SslStream? _clientTls;

    public MySqlProxyConnection(ProxyEndpoint endpoint, Socket client, long id, ProxyOptions options)
    {
        _endpoint = endpoint;
        _client = client;
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
            var target = await _endpoint.AdmitAsync(this, stopping);
            if (target is null)
            {
                await SocketIo.SendQuietlyAsync(_client, MySqlWire.Error(0, MySqlWire.ErServerShutdown, "08S01", $"Teal endpoint {_endpoint.Name} is paused for a switchover; retry", withSqlState: false));
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

            reason = await LoginAsync(server, stopping) ?? await PumpAsync(server);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException or IOException)
        {
            reason = ex.Message;
        }
        finally
        {
            Abort(ConnectionOutcome.ClosedIdle);
            _clientTls?.Dispose();
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

    public void Abort(ConnectionOutcome outcome)
    {
        Socket? server;
        lock (_lock)
        {
            _closing = true;
            if (_outcome == ConnectionOutcome.Open)
            {
                _outcome = outcome;
            }

            server = _server;
        }

        _client.Dispose();
        server?.Dispose();
    }

    /// <summary>
    /// Passes the server's greeting on without the capabilities the proxy cannot relay (TLS
    /// offered instead when the endpoint has a certificate), ends the client's TLS when it asks,
    /// and passes the client's answer on, refusing one that asks for what the proxy cannot relay.
    /// Null when the pumps take over; otherwise why it ended.
    /// </summary>
    private async Task<string?> LoginAsync(Socket server, CancellationToken stopping)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        timeout.CancelAfter(_options.StartupTimeout);
        var greeting = await ReceivePacketAsync(server, timeout.Token);
        if (greeting is null)
        {
            return "server closed before its greeting";
        }

        var certificate = _options.Certificate;
        var serverCapabilities = MySqlWire.StripHandshakeCapabilities(greeting.AsSpan(MySqlWire.HeaderSize), offerTls: certificate is not null);
        await SocketIo.SendAllAsync(_client, greeting);
        _endpoint.CountToClient(greeting.Length);
        if (serverCapabilities is null)
        {
            return "server refused the connection";
        }

        var answer = await ReceivePacketAsync(_client, timeout.Token);
        if (answer is null)
        {
            return "client left during login";
        }

        _endpoint.CountFromClient(answer.Length);
        var clientCapabilities = MySqlWire.ClientCapabilities(answer.AsSpan(MySqlWire.HeaderSize)) ?? 0;
        if ((clientCapabilities & MySqlWire.ClientSsl) != 0 && certificate is not null && answer.Length == MySqlWire.HeaderSize + MySqlWire.SslRequestLength)
        {
            // The SSL request: the first fields of the answer, the rest follows over TLS.
            _clientTls = new SslStream(new NetworkStream(_client, ownsSocket: false));
            try
            {
                await _clientTls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions { ServerCertificate = certificate }, timeout.Token);
            }
            catch (AuthenticationException ex)
            {
                return $"TLS handshake failed: {ex.Message}";
            }

            answer = await ReceivePacketAsync(_clientTls, timeout.Token);
            if (answer is null)
            {
                return "client left during login";
            }

            _endpoint.CountFromClient(answer.Length);
            clientCapabilities = MySqlWire.ClientCapabilities(answer.AsSpan(MySqlWire.HeaderSize)) ?? 0;

            // The server never saw the SSL request: it expects the answer as the packet after
            // its greeting, without CLIENT_SSL (the proxy reaches it in plain text).
            clientCapabilities &= ~MySqlWire.ClientSsl;
            MySqlWire.SetClientCapabilities(answer.AsSpan(MySqlWire.HeaderSize), clientCapabilities);
            answer[3]--;
        }
        else if (_options.RequireTls)
        {
            await SocketIo.SendQuietlyAsync(_client, MySqlWire.Error((byte)(answer[3] + 1), MySqlWire.ErSecureTransportRequired, "08004",
                $"Teal endpoint {_endpoint.Name} accepts only TLS connections; connect with TLS (ssl-mode=REQUIRED, --ssl, SslMode=Required)", withSqlState: true));
            return "refused: no TLS";
        }

        if ((clientCapabilities & (MySqlWire.ClientSsl | MySqlWire.ClientCompress)) != 0 || (clientCapabilities & MySqlWire.ClientProtocol41) == 0)
        {
            // The greeting offered no compression (and TLS only with a certificate); a client
            // asking for them anyway (or speaking the pre-4.1 protocol) cannot be relayed packet by packet.
            await SendToClientQuietlyAsync(MySqlWire.Error((byte)(answer[3] + 1 + (_clientTls is null ? 0 : 1)), MySqlWire.ErNotSupportedYet, "08004",
                $"Teal endpoint {_endpoint.Name} relays the MySQL protocol 4.1 without compression{(certificate is null ? " or TLS" : "")}; connect without {(certificate is null ? "them" : "it")}", withSqlState: true));
            return "client asked for TLS, compression or an old protocol";
        }

        lock (_lock)
        {
            _session.Negotiated(serverCapabilities.Value & clientCapabilities);
        }

        await SocketIo.SendAllAsync(server, answer);
        return _clientTls is null ? null : await RelayLoginOverTlsAsync(server, timeout.Token);
    }

    /// <summary>
    /// The rest of a TLS client's login, packet by packet: the client numbered its packets after
    /// its SSL request, one more than the server, which never saw that request. Each packet is
    /// renumbered on its way, up to the server's OK (the pumps take over: commands number from
    /// 0) or ERR. Null when logged in; otherwise why it ended.
    /// </summary>
    private async Task<string?> RelayLoginOverTlsAsync(Socket server, CancellationToken cancellationToken)
    {
        while (true)
        {
            var packet = await ReceivePacketAsync(server, cancellationToken);
            if (packet is null)
            {
                return "server closed during login";
            }

            packet[3]++;
            await _clientTls!.WriteAsync(packet, cancellationToken);
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
            var reply = await ReceivePacketAsync(_clientTls, cancellationToken);
            if (reply is null)
            {
                return "client left during login";
            }

            _endpoint.CountFromClient(reply.Length);
            reply[3]--;
            await SocketIo.SendAllAsync(server, reply);
        }
    }

    private async Task<string> PumpAsync(Socket server)
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

    private async Task<string> ClientToServerAsync(Socket server, byte[] buffer)
    {
        try
        {
            while (true)
            {
                var read = _clientTls is { } tls ? await tls.ReadAsync(buffer.AsMemory()) : await _client.ReceiveAsync(buffer.AsMemory(), SocketFlags.None);
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
                await SocketIo.SendAllAsync(server, buffer.AsMemory(0, read));
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
        {
            return "client side closed";
        }
    }

    private async Task<string> ServerToClientAsync(Socket server, byte[] buffer)
    {
        try
        {
            while (true)
            {
                var read = await server.ReceiveAsync(buffer.AsMemory(), SocketFlags.None);
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

                await SendToClientAsync(buffer.AsMemory(0, read));
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
        Socket? server;
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
        SocketIo.ShutdownQuietly(_client);
        if (server is not null)
        {
            if (loggedIn)
            {
                await SocketIo.SendQuietlyAsync(server, MySqlWire.Quit);
            }

            SocketIo.ShutdownQuietly(server);
        }

        if (!loggedIn)
        {
            // Mid-login the relay may sit in a login read that no shutdown ends on its own.
            Abort(ConnectionOutcome.ClosedIdle);
        }
    }

    private async Task<Socket?> ConnectAsync(EndpointTarget target, CancellationToken stopping)
    {
        var server = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
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

        if (await SocketIo.ConnectAsync(server, target, _options.ConnectTimeout, stopping) is not { } reason)
        {
            return server;
        }

        _endpoint.OnUpstreamConnectFailed(target, reason);
        await SocketIo.SendQuietlyAsync(_client, MySqlWire.Error(0, MySqlWire.ErServerShutdown, "08S01",
            $"Teal endpoint {_endpoint.Name} could not reach instance {target.Instance} at {target.Host}:{target.Port}: {reason}", withSqlState: false));
        return null;
    }

    private ValueTask SendToClientAsync(ReadOnlyMemory<byte> data) =>
        _clientTls is { } tls ? tls.WriteAsync(data) : SocketIo.SendAllAsync(_client, data);

    private async Task SendToClientQuietlyAsync(byte[] data)
    {
        try
        {
            await SendToClientAsync(data);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
        {
            // The client is gone already; there is nobody left to tell.
        }
    }

    /// <summary>One whole packet (header included), or null when the peer closed first.</summary>
    private static Task<byte[]?> ReceivePacketAsync(Socket socket, CancellationToken cancellationToken) =>
        ReceivePacketAsync((buffer, ct) => SocketIo.ReceiveExactlyAsync(socket, buffer, ct), cancellationToken);

    /// <summary>One whole packet from the client's TLS, or null when it closed first.</summary>
    private static Task<byte[]?> ReceivePacketAsync(SslStream tls, CancellationToken cancellationToken) =>
        ReceivePacketAsync(async (buffer, ct) => await tls.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, ct) == buffer.Length, cancellationToken);

    private static async Task<byte[]?> ReceivePacketAsync(Func<Memory<byte>, CancellationToken, Task<bool>> receiveExactly, CancellationToken cancellationToken)
    {
        var header = new byte[MySqlWire.HeaderSize];
        if (!await receiveExactly(header, cancellationToken))
        {
            return null;
        }

        var length = MySqlWire.PayloadLength(header);
        if (length > MaxLoginPacket)
        {
            throw new IOException($"a login packet of {length} bytes");
        }

        var packet = new byte[MySqlWire.HeaderSize + length];
        header.CopyTo(packet, 0);
        return await receiveExactly(packet.AsMemory(MySqlWire.HeaderSize), cancellationToken) ? packet : null;
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
