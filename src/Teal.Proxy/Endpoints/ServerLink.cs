using System.Buffers.Binary;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Teal.Core.Endpoints;
using Teal.Proxy.Protocol;
using Teal.Proxy.Tls;

namespace Teal.Proxy.Endpoints;

/// <summary>
/// The proxy's connection to a PostgreSQL server: a socket, with TLS on it when the endpoint's
/// server TLS mode asks for it and the server accepts (libpq's <c>sslmode</c>, negotiated the same
/// way: SSLRequest, then 'S' and the handshake or 'N').
/// </summary>
internal sealed class ServerLink : IDisposable
{
    private static readonly TimeSpan NegotiationTimeout = TimeSpan.FromSeconds(60);

    private Socket _socket = new(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };

    // The socket on the proxy's event loop (EpollSockets), when it runs; else .NET's socket.
    private EpollSocket? _io;

    // The client's socket on the loop, whose loop this link's socket joins (EpollSockets.Attach).
    private readonly EpollSocket? _near;

    // SslStream allows one write at a time; a drain's state query and the client pump can write at
    // once. Plain sockets need no gate.
    private readonly SemaphoreSlim _writes = new(1, 1);
    private SslStream? _tls;

    /// <summary>A link whose socket, on the event loop, joins <paramref name="near"/>'s loop (its client's).</summary>
    public ServerLink(EpollSocket? near = null) => _near = near;

    /// <summary>Whether receives continue on the event loop's thread (forwarding) or the thread pool (see <see cref="EpollSocket.InlineCompletions"/>).</summary>
    public bool InlineCompletions
    {
        get => _io?.InlineCompletions ?? false;
        set => _io?.InlineCompletions = value;
    }

    /// <summary>True once TLS is up on the link.</summary>
    public bool Encrypted => _tls is not null || _io?.Encrypted == true;

    /// <summary>
    /// Connects to <paramref name="target"/> and sets up TLS as <paramref name="options"/> say,
    /// all within the connect timeout: null when the link is ready, else why not, in words for
    /// the client's error. Stopping Teal throws as usual. Under prefer, a server
    /// <paramref name="plaintext"/> knows to have answered 'N' is not asked again.
    /// </summary>
    public async Task<string?> OpenAsync(EndpointTarget target, ProxyOptions options, CancellationToken stopping, PlaintextServers? plaintext = null)
    {
        if (EpollSockets.Enabled)
        {
            var (socket, io, failed) = await EpollSockets.ConnectAsync(target, options.ConnectTimeout, stopping, _near);
            if (socket is null)
            {
                return failed;
            }

            _socket.Dispose();
            _socket = socket;
            _io = io;
        }
        else if (await SocketIo.ConnectAsync(_socket, target, options.ConnectTimeout, stopping) is { } failure)
        {
            return failure;
        }

        if (options.ServerTls == ServerTlsMode.Disable || (options.ServerTls == ServerTlsMode.Prefer && plaintext?.Known(target) == true))
        {
            return null;
        }

        // The answer to SSLRequest comes from the backend process, once forked and started: in a
        // burst of hundreds of logins that takes far longer than the TCP connect, so the bound
        // is PostgreSQL's own for a login (authentication_timeout's default), not the connect's.
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        deadline.CancelAfter(NegotiationTimeout);
        try
        {
            var request = new byte[8];
            BinaryPrimitives.WriteInt32BigEndian(request, 8);
            BinaryPrimitives.WriteInt32BigEndian(request.AsSpan(4), PostgresWire.SslRequestCode);
            await SendAllAsync(request, deadline.Token);
            var answer = new byte[1];
            if (await ReceiveAsync(answer, deadline.Token) == 0)
            {
                return "the server closed the connection when asked for TLS";
            }

            if (answer[0] != (byte)'S')
            {
                // 'N': the server has ssl = off. Only prefer goes on in plain text.
                if (options.ServerTls == ServerTlsMode.Prefer)
                {
                    plaintext?.Remember(target);
                    return null;
                }

                return $"the server does not accept TLS, and the endpoint's server TLS mode is {options.ServerTls.ToString().ToLowerInvariant()}";
            }

            if (_io is not null && options.ServerTls != ServerTlsMode.VerifyFull && OpenSslContext.ForClient() is { } openSsl)
            {
                // On the event loop OpenSSL reads and writes the socket itself, as for clients.
                // verify-full stays with SslStream, whose chain and host name checks are .NET's.
                await _io.StartTlsAsync(openSsl, deadline.Token);
                return null;
            }

            var tls = new SslStream(_io?.AsStream() ?? new NetworkStream(_socket, ownsSocket: false));
            _tls = tls;
            await tls.AuthenticateAsClientAsync(ClientOptions(target, options), deadline.Token);
            return null;
        }
        catch (Exception ex) when ((ex is SocketException or IOException or System.Security.Authentication.AuthenticationException or OperationCanceledException) && !stopping.IsCancellationRequested)
        {
            return ex is OperationCanceledException
                ? $"no TLS handshake within {NegotiationTimeout.TotalSeconds:0} s"
                : $"TLS with the server failed: {ex.Message}";
        }
    }

    /// <summary>
    /// Connects to a server's Unix socket (<paramref name="path"/>; an abstract one starts with a
    /// NUL): null when connected, else why not. No TLS: a Unix socket does not leave the machine.
    /// </summary>
    public async Task<string?> OpenLocalAsync(string path, TimeSpan timeout, CancellationToken stopping)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            // A local connect completes at once (or fails); on the event loop, the socket must not
            // have met .NET's own epoll, so it connects while still blocking.
            await Task.Run(() => socket.Connect(new UnixDomainSocketEndPoint(path)), stopping).WaitAsync(timeout, stopping);
            _io = EpollSockets.Attach(socket, _near);
            _socket.Dispose();
            _socket = socket;
            return null;
        }
        catch (Exception ex) when ((ex is SocketException or TimeoutException) && !stopping.IsCancellationRequested)
        {
            socket.Dispose();
            return ex is TimeoutException ? $"no answer on its local socket within {timeout.TotalSeconds:0} s" : $"its local socket: {ex.Message}";
        }
    }

    /// <summary>
    /// require and prefer encrypt without checking who answers (as libpq does without a root
    /// certificate); verify-full checks the chain, against the endpoint's roots when it names
    /// some, and that the certificate is for the host Teal connects to.
    /// </summary>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Security", "CA5359", Justification = "prefer and require do not check the certificate, exactly as libpq's sslmode of the same names; verify-full does")]
    internal static SslClientAuthenticationOptions ClientOptions(EndpointTarget target, ProxyOptions options)
    {
        var client = new SslClientAuthenticationOptions { TargetHost = target.Host };
        if (options.ServerTls != ServerTlsMode.VerifyFull)
        {
            client.RemoteCertificateValidationCallback = (_, _, _, _) => true;
        }
        else if (options.ServerTlsRoots is { Count: > 0 } roots)
        {
            client.CertificateChainPolicy = new X509ChainPolicy { TrustMode = X509ChainTrustMode.CustomRootTrust, RevocationMode = X509RevocationMode.NoCheck };
            client.CertificateChainPolicy.CustomTrustStore.AddRange(roots);
        }

        return client;
    }

    public ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken) =>
        _tls is not null ? _tls.ReadAsync(buffer, cancellationToken)
        : _io is not null ? _io.ReceiveAsync(buffer, cancellationToken)
        : _socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);

    // Not async itself: on the event loop a send that completes at once builds no state machine.
    public ValueTask SendAllAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default) =>
        _tls is null && _io is not null ? _io.SendAllAsync(data, cancellationToken) : SendAllOtherwiseAsync(data, cancellationToken);

    private async ValueTask SendAllOtherwiseAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        if (_tls is null)
        {
            while (data.Length > 0)
            {
                var sent = await _socket.SendAsync(data, SocketFlags.None, cancellationToken);
                data = data[sent..];
            }

            return;
        }

        await _writes.WaitAsync(cancellationToken);
        try
        {
            await _tls.WriteAsync(data, cancellationToken);
        }
        finally
        {
            _writes.Release();
        }
    }

    public async Task SendQuietlyAsync(byte[] data)
    {
        try
        {
            await SendAllAsync(data);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
        {
            // The server is gone already; there is nobody left to tell.
        }
    }

    public void ShutdownQuietly() => SocketIo.ShutdownQuietly(_socket);

    public void Dispose()
    {
        // _writes is not disposed: a write may still be waiting on it, and without a wait handle
        // it holds nothing to release.
        _tls?.Dispose();
        _io?.Close();
        _socket.Dispose();
    }
}

/// <summary>
/// Servers that answered an endpoint's TLS request with 'N' (ssl = off), remembered for a
/// minute: under server TLS mode prefer such a server is logged in to in plain text without
/// asking again, which saves each login — a moved session's inside the switchover's write gap
/// above all — one round trip to a backend just started. Only 'N' is remembered: a server that
/// accepts TLS is asked every time, and one that turns TLS on is asked again within a minute.
/// </summary>
internal sealed class PlaintextServers(TimeProvider time)
{
    private static readonly TimeSpan Remembered = TimeSpan.FromMinutes(1);

    private readonly System.Collections.Concurrent.ConcurrentDictionary<(string Host, int Port), long> _until = new();

    public bool Known(EndpointTarget target) =>
        _until.TryGetValue((target.Host, target.Port), out var until) && time.GetTimestamp() < until;

    public void Remember(EndpointTarget target) =>
        _until[(target.Host, target.Port)] = time.GetTimestamp() + (long)(Remembered.TotalSeconds * time.TimestampFrequency);
}
