using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Teal.Proxy.Endpoints;

namespace Teal.Proxy.MySql;

/// <summary>
/// One side of a MySQL connection through the proxy, the client's or the server's: its socket,
/// and the TLS over it once started (the proxy ends the client's TLS, and starts its own with
/// a server that offers it). Reads and writes go through the TLS when there is one.
/// </summary>
internal sealed class MySqlLeg(Socket socket) : IDisposable
{
    /// <summary>A greeting or login packet larger than this is not one (connection attributes included).</summary>
    private const int MaxLoginPacket = 1024 * 1024;

    private SslStream? _tls;

    public Socket Socket => socket;

    public bool Encrypted => _tls is not null;

    public ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        _tls is { } tls ? tls.ReadAsync(buffer, cancellationToken) : socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);

    public ValueTask SendAsync(ReadOnlyMemory<byte> data) =>
        _tls is { } tls ? tls.WriteAsync(data) : SocketIo.SendAllAsync(socket, data);

    public async Task SendQuietlyAsync(byte[] data)
    {
        try
        {
            await SendAsync(data);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
        {
            // The peer is gone already; there is nobody left to tell.
        }
    }

    /// <summary>One whole login packet (header included), or null when the peer closed first.</summary>
    public async Task<byte[]?> ReceivePacketAsync(CancellationToken cancellationToken)
    {
        var header = new byte[MySqlWire.HeaderSize];
        if (!await ReceiveExactlyAsync(header, cancellationToken))
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
        return await ReceiveExactlyAsync(packet.AsMemory(MySqlWire.HeaderSize), cancellationToken) ? packet : null;
    }

    /// <summary>The client's TLS handshake, after its SSL request.</summary>
    public Task AcceptTlsAsync(X509Certificate2 certificate, CancellationToken cancellationToken)
    {
        _tls = new SslStream(new NetworkStream(socket, ownsSocket: false));
        return _tls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions { ServerCertificate = certificate }, cancellationToken);
    }

    /// <summary>The proxy's own TLS handshake with the server, after its SSL request.</summary>
    public Task StartTlsAsync(SslClientAuthenticationOptions options, CancellationToken cancellationToken)
    {
        _tls = new SslStream(new NetworkStream(socket, ownsSocket: false));
        return _tls.AuthenticateAsClientAsync(options, cancellationToken);
    }

    /// <summary>Closes the socket, which ends any read or write under way; the TLS state stays until <see cref="Dispose"/>.</summary>
    public void Close() => socket.Dispose();

    public void Dispose()
    {
        socket.Dispose();
        _tls?.Dispose();
    }

    private async Task<bool> ReceiveExactlyAsync(Memory<byte> buffer, CancellationToken cancellationToken) =>
        _tls is { } tls
            ? await tls.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, cancellationToken) == buffer.Length
            : await SocketIo.ReceiveExactlyAsync(socket, buffer, cancellationToken);
}
