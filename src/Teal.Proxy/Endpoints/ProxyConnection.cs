using System.Buffers;
using System.Buffers.Binary;
using System.Net.Sockets;
using Teal.Core.Endpoints;
using Teal.Proxy.Protocol;

namespace Teal.Proxy.Endpoints;

/// <summary>How a proxied connection ended, as far as a drain is concerned.</summary>
internal enum ConnectionOutcome
{
    Open,
    ClosedIdle,
    ClosedAtDeadline,
}

/// <summary>
/// One client connection: reads its startup packet, is admitted (or held) by the endpoint,
/// connects to the target and pumps bytes both ways. Both pumps follow the message framing to
/// know when the session is between transactions, so a drain closes it there and nowhere else.
/// </summary>
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
    private byte _status;
    private bool _writingToClient;
    private bool _drainRequested;
    private bool _closing;
    private bool _closedDuringLogin; // set with _closing, read after it by the one closing
    private ConnectionOutcome _outcome;

    // Each framer is touched only by the pump of its direction.
    private MessageFramer _clientFramer;
    private MessageFramer _serverFramer;
    private Socket? _server;

    public ProxyConnection(ProxyEndpoint endpoint, Socket client, long id, ProxyOptions options)
    {
        _endpoint = endpoint;
        _client = client;
        Id = id;
        _options = options;
    }

    public long Id { get; }

    /// <summary>Set by the endpoint, under its gate, when the connection may go upstream.</summary>
    public bool Admitted { get; set; }

    /// <summary>BackendKeyData of the session, to route a CancelRequest to the instance that owns it.</summary>
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

            var target = await _endpoint.AdmitAsync(this, stopping);
            if (target is null)
            {
                await SendQuietlyAsync(_client, _endpoint.PausedError);
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

            await SendAllAsync(server, startup);
            reason = await PumpAsync(server);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or OperationCanceledException or IOException)
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
            _endpoint.OnConnectionEnded(this, reason);
        }
    }

    /// <summary>
    /// Asks the connection to close at its next transaction boundary; closes it now if it is there.
    /// Called once per drain, after the endpoint has stopped admitting.
    /// </summary>
    public void RequestDrain()
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
    }

    /// <summary>Cuts the connection now (the drain budget ran out, or the endpoint stops).</summary>
    public void Abort(ConnectionOutcome outcome)
    {
        lock (_lock)
        {
            _closing = true;
            if (_outcome == ConnectionOutcome.Open)
            {
                _outcome = outcome;
            }
        }

        _client.Dispose();
        _server?.Dispose();
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

                    var messages = new ClientMessages { Unsynced = _unsynced };
                    _clientFramer.Scan(buffer.AsSpan(0, read), ref messages);
                    _pendingSyncs += messages.Syncs;
                    _unsynced = messages.Unsynced;
                    _clientPartial = _clientFramer.InMessage;
                }

                _endpoint.CountFromClient(read);
                await SendAllAsync(server, buffer.AsMemory(0, read));
            }
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
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

                var messages = default(BackendMessages);
                _serverFramer.Scan(buffer.AsSpan(0, read), ref messages);
                if (messages.HasKey)
                {
                    BackendKey = messages.Key;
                    _endpoint.RegisterBackendKey(this, messages.Key);
                }

                lock (_lock)
                {
                    if (_closing)
                    {
                        return "closing";
                    }

                    _writingToClient = true;
                }

                await SendAllAsync(_client, buffer.AsMemory(0, read));
                _endpoint.CountToClient(read);

                bool closeNow;
                lock (_lock)
                {
                    _writingToClient = false;
                    if (messages.Ready > 0)
                    {
                        _pendingSyncs = Math.Max(0, _pendingSyncs - messages.Ready);
                        _status = messages.Status;
                    }

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
        catch (InvalidDataException ex)
        {
            return $"protocol error from server: {ex.Message}";
        }
    }

    /// <summary>
    /// Between transactions: the last ReadyForQuery said idle ('I'), every Query/Sync got its
    /// ReadyForQuery, no extended-protocol message waits for a Sync, no client message is half
    /// received and nothing is being written to the client. Or still logging in (no
    /// ReadyForQuery yet): no transaction can be open, and waiting for authentication and
    /// backend start would only lengthen the drain, since the client would be closed right after
    /// it anyway. Only then may the proxy end the session.
    /// </summary>
    private bool TryBeginCloseLocked()
    {
        if (_closing || _server is null || _writingToClient)
        {
            return false;
        }

        var loggingIn = _status == 0;
        if (!loggingIn && (_status != (byte)'I' || _pendingSyncs != 0 || _unsynced || _clientPartial))
        {
            return false;
        }

        _closing = true;
        _closedDuringLogin = loggingIn;
        _outcome = ConnectionOutcome.ClosedIdle;
        return true;
    }

    private async Task CloseBetweenTransactionsAsync()
    {
        // Terminate lets the backend end the session as if the client had; the client gets
        // 57P01 admin_shutdown, which drivers and pools treat as "reconnect".
        var server = _server!; // TryBeginCloseLocked requires a server socket.
        var error = _closedDuringLogin ? _endpoint.LoginDrainError : _endpoint.DrainError;
        // The client's error first: once the backend ends, the server pump aborts the connection
        // and disposes the client socket, and an error not yet sent by then is lost (the client
        // would see a reset instead of 57P01). Shut down after the send, the error goes out
        // before the FIN.
        await SendQuietlyAsync(_client, error);
        ShutdownQuietly(_client);
        await SendQuietlyAsync(server, PostgresWire.Terminate.ToArray());
        ShutdownQuietly(server);
    }

    private async Task<byte[]?> ReadStartupAsync(CancellationToken stopping)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        timeout.CancelAfter(_options.StartupTimeout);
        var header = new byte[8];
        while (true)
        {
            if (!await ReceiveExactlyAsync(_client, header, timeout.Token))
            {
                return null;
            }

            var length = BinaryPrimitives.ReadInt32BigEndian(header);
            var code = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(4));
            if (length == 8 && code is PostgresWire.SslRequestCode or PostgresWire.GssEncRequestCode)
            {
                // The proxy speaks plaintext on loopback; 'N' tells the client to go on without
                // encryption, as a server without SSL does.
                await SendAllAsync(_client, "N"u8.ToArray());
                continue;
            }

            if (length < 8 || length > PostgresWire.MaxStartupPacket)
            {
                return null;
            }

            var packet = new byte[length];
            header.CopyTo(packet, 0);
            return await ReceiveExactlyAsync(_client, packet.AsMemory(8), timeout.Token) ? packet : null;
        }
    }

    private async Task<Socket?> ConnectAsync(EndpointTarget target, CancellationToken stopping)
    {
        var server = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        lock (_lock)
        {
            if (_closing)
            {
                // Cut (drain budget or stop) while it was being admitted: never reach the server.
                server.Dispose();
                return null;
            }

            _server = server;
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        timeout.CancelAfter(_options.ConnectTimeout);
        try
        {
            await server.ConnectAsync(target.Host, target.Port, timeout.Token);
            return server;
        }
        catch (Exception ex) when (ex is SocketException or OperationCanceledException)
        {
            if (stopping.IsCancellationRequested)
            {
                throw;
            }

            var reason = ex is OperationCanceledException ? $"no answer within {_options.ConnectTimeout.TotalSeconds:0} s" : ex.Message;
            _endpoint.OnUpstreamConnectFailed(target, reason);
            await SendQuietlyAsync(_client, PostgresWire.FatalError(
                PostgresWire.ConnectionFailure, $"Teal endpoint {_endpoint.Name} could not reach instance {target.Instance} at {target.Host}:{target.Port}: {reason}"));
            return null;
        }
    }

    private static async Task<bool> ReceiveExactlyAsync(Socket socket, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        while (buffer.Length > 0)
        {
            var read = await socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);
            if (read == 0)
            {
                return false;
            }

            buffer = buffer[read..];
        }

        return true;
    }

    private static async ValueTask SendAllAsync(Socket socket, ReadOnlyMemory<byte> data)
    {
        while (data.Length > 0)
        {
            var sent = await socket.SendAsync(data, SocketFlags.None);
            data = data[sent..];
        }
    }

    private static async Task SendQuietlyAsync(Socket socket, byte[] data)
    {
        try
        {
            await SendAllAsync(socket, data);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // The peer is gone already; there is nobody left to tell.
        }
    }

    private static void ShutdownQuietly(Socket socket)
    {
        try
        {
            socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // Already closed by the peer or by an abort.
        }
    }
}
