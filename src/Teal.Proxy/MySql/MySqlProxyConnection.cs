using System.Buffers;
using System.Net.Sockets;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;

namespace Teal.Proxy.MySql;

/// <summary>
/// One MySQL-protocol client connection. The server speaks first, so the connection is admitted
/// (or held, while the endpoint is paused) as soon as it is accepted, connects to the route and
/// relays the server's greeting — without TLS and compression, which would hide the packets —
/// and the client's login. Both pumps then follow packet boundaries and each command's
/// response (<see cref="MySqlSession"/>), so a drain closes the connection only when it is idle
/// outside a transaction, or still logging in.
/// </summary>
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
    /// Passes the server's greeting on without the capabilities the proxy cannot relay, and the
    /// client's answer back, refusing a client that asks for TLS anyway. Null when the pumps
    /// take over (authentication exchanges are relayed by them); otherwise why it ended.
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

        var serverCapabilities = MySqlWire.StripHandshakeCapabilities(greeting.AsSpan(MySqlWire.HeaderSize));
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
        if ((clientCapabilities & (MySqlWire.ClientSsl | MySqlWire.ClientCompress)) != 0 || (clientCapabilities & MySqlWire.ClientProtocol41) == 0)
        {
            // The greeting offered neither TLS nor compression; a client asking for them anyway
            // (or speaking the pre-4.1 protocol) cannot be relayed packet by packet.
            await SocketIo.SendQuietlyAsync(_client, MySqlWire.Error((byte)(answer[3] + 1), MySqlWire.ErNotSupportedYet, "08004",
                $"Teal endpoint {_endpoint.Name} relays the MySQL protocol 4.1 without TLS or compression; connect without them", withSqlState: true));
            return "client asked for TLS, compression or an old protocol";
        }

        lock (_lock)
        {
            _session.Negotiated(serverCapabilities.Value & clientCapabilities);
        }

        await SocketIo.SendAllAsync(server, answer);
        return null;
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
                var read = await _client.ReceiveAsync(buffer.AsMemory(), SocketFlags.None);
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
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
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

                await SocketIo.SendAllAsync(_client, buffer.AsMemory(0, read));
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
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
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

    /// <summary>One whole packet (header included), or null when the peer closed first.</summary>
    private static async Task<byte[]?> ReceivePacketAsync(Socket socket, CancellationToken cancellationToken)
    {
        var header = new byte[MySqlWire.HeaderSize];
        if (!await SocketIo.ReceiveExactlyAsync(socket, header, cancellationToken))
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
        return await SocketIo.ReceiveExactlyAsync(socket, packet.AsMemory(MySqlWire.HeaderSize), cancellationToken) ? packet : null;
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
