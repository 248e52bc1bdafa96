using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Teal.Proxy.Endpoints;
using Teal.Proxy.Tls;

namespace Teal.Proxy.Tests.Tls;

/// <summary>
/// TLS by OpenSSL on the event loop's socket — a client's ended at the proxy, and the proxy's own
/// to a server — against .NET's SslStream on the other end: what the proxy tests through a server
/// do not force (records larger than a read, full send buffers, many small messages with the
/// socket drained between them, a broken handshake).
/// </summary>
public sealed class OpenSslSessionTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("teal-openssl-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public void GeneratedCertificate_GetsAnOpenSslContext()
    {
        // Guards the suite: the proxy tests with TLS go through the path production uses on Linux.
        using var certificate = ProxyCertificate.LoadOrCreate(_directory);

        OpenSslContext.ForServer(certificate).ShouldNotBeNull(OpenSslContext.Unavailable);
    }

    [Theory]
    [InlineData("server, EC key")]
    [InlineData("server, RSA key")]
    [InlineData("client")]
    public async Task Exchange_LargeAndSmall_BothWays_ArrivesWhole_ThenThePeersCloseReadsAsTheEnd(string side)
    {
        using var certificate = side == "server, RSA key" ? RsaCertificate() : ProxyCertificate.LoadOrCreate(_directory);
        var (client, tls, server, io) = side == "client" ? await ConnectAsync(certificate) : await HandshakeAsync(certificate);
        try
        {
            // The client's 4 MB, read late: OpenSSL's read-ahead fills its buffer from a full
            // socket, so the receive must ask again without an edge.
            var up = RandomNumberGenerator.GetBytes(4 << 20);
            var writing = tls.WriteAsync(up).AsTask();
            await Task.Delay(200);
            (await ReceiveExactlyAsync(io, up.Length)).SequenceEqual(up).ShouldBeTrue();
            await writing.WaitAsync(TimeSpan.FromSeconds(30));

            // 8 MB to the client, read late: OpenSSL's writes would block and go on at writable edges.
            var down = RandomNumberGenerator.GetBytes(8 << 20);
            var sending = io.SendAllAsync(down).AsTask();
            await Task.Delay(200);
            sending.IsCompleted.ShouldBeFalse();
            var received = new byte[down.Length];
            await tls.ReadExactlyAsync(received).AsTask().WaitAsync(TimeSpan.FromSeconds(60));
            await sending.WaitAsync(TimeSpan.FromSeconds(30));
            received.SequenceEqual(down).ShouldBeTrue();

            // Ping-pong of small messages, the socket drained between them: each waits for its edge.
            var message = new byte[100];
            var answer = new byte[100];
            for (var i = 0; i < 500; i++)
            {
                message[0] = (byte)i;
                await tls.WriteAsync(message);
                (await ReceiveExactlyAsync(io, message.Length))[0].ShouldBe((byte)i);
                await io.SendAllAsync(message);
                await tls.ReadExactlyAsync(answer).AsTask().WaitAsync(TimeSpan.FromSeconds(10));
                answer[0].ShouldBe((byte)i);
            }

            // libpq closes without close_notify (so may a server): the end of the stream, not an error.
            client.Shutdown(SocketShutdown.Both);
            (await io.ReceiveAsync(new byte[16]).AsTask().WaitAsync(TimeSpan.FromSeconds(10))).ShouldBe(0);
        }
        finally
        {
            await CloseAsync(client, tls, server, io);
        }
    }

    [Fact]
    public async Task Handshake_WithAClientThatDoesNotSpeakTls_FailsWithItsReason_AndOneThatHangsUp_Too()
    {
        using var certificate = ProxyCertificate.LoadOrCreate(_directory);
        var context = OpenSslContext.ForServer(certificate).ShouldNotBeNull();

        var (client, server, io) = await PairAsync();
        try
        {
            await client.SendAsync("GET / HTTP/1.1\r\n\r\n"u8.ToArray());
            var error = await Should.ThrowAsync<IOException>(io.StartTlsAsync(context, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10)));
            error.Message.ShouldStartWith("TLS handshake failed:");
            io.Encrypted.ShouldBeFalse();
        }
        finally
        {
            client.Dispose();
            io.Close();
            server.Dispose();
        }

        (client, server, io) = await PairAsync();
        try
        {
            var handshake = io.StartTlsAsync(context, CancellationToken.None);
            await Task.Delay(100);
            client.Shutdown(SocketShutdown.Both);
            var error = await Should.ThrowAsync<IOException>(handshake.WaitAsync(TimeSpan.FromSeconds(10)));
            error.Message.ShouldBe("the peer closed the connection during the TLS handshake");
        }
        finally
        {
            client.Dispose();
            io.Close();
            server.Dispose();
        }
    }

    [Fact]
    public async Task Receive_OfARecordThatDoesNotDecrypt_FailsWithItsReason_ParkedOrNot_AndSendsFailAfter()
    {
        using var certificate = ProxyCertificate.LoadOrCreate(_directory);
        foreach (var parked in new[] { true, false })
        {
            var (client, tls, server, io) = await HandshakeAsync(certificate);
            try
            {
                // Bytes past the client's TLS, straight on its socket: an application data record OpenSSL cannot decrypt.
                var garbage = new byte[] { 23, 3, 3, 0, 32 }.Concat(RandomNumberGenerator.GetBytes(32)).ToArray();
                var receiving = parked ? io.ReceiveAsync(new byte[64]).AsTask() : null;
                await Task.Delay(100);
                await client.SendAsync(garbage);
                await Task.Delay(parked ? 0 : 200);
                receiving ??= io.ReceiveAsync(new byte[64]).AsTask();

                var error = await Should.ThrowAsync<IOException>(receiving.WaitAsync(TimeSpan.FromSeconds(10)));
                error.Message.ShouldStartWith("TLS read failed:");

                // Sends on the broken session fail too, each at once: a failed one gives the send turn back.
                await Should.ThrowAsync<IOException>(io.SendAllAsync(new byte[8]).AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
                await Should.ThrowAsync<IOException>(io.SendAllAsync(new byte[8]).AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
            }
            finally
            {
                await CloseAsync(client, tls, server, io);
            }
        }
    }

    [Fact]
    public async Task Receive_AfterTheSocketIsClosed_FailsAsAClosedSocket_WithoutTouchingTheFreedSession()
    {
        using var certificate = ProxyCertificate.LoadOrCreate(_directory);
        var (client, tls, server, io) = await HandshakeAsync(certificate);
        try
        {
            var receiving = io.ReceiveAsync(new byte[16]).AsTask();
            io.Close();

            await Should.ThrowAsync<SocketException>(receiving.WaitAsync(TimeSpan.FromSeconds(10)));
            await Should.ThrowAsync<ObjectDisposedException>(io.SendAllAsync(new byte[4]).AsTask());
        }
        finally
        {
            await tls.DisposeAsync();
            client.Dispose();
            server.Dispose();
        }
    }

    /// <summary>Both ends closed; closing the loop's side frees its OpenSSL session.</summary>
    private static async Task CloseAsync(Socket peer, SslStream tls, Socket socket, EpollSocket io)
    {
        await tls.DisposeAsync();
        peer.Dispose();
        io.Close();
        socket.Dispose();
    }

    private static X509Certificate2 RsaCertificate()
    {
        using var rsa = RSA.Create(2048);
        var request = new CertificateRequest("CN=127.0.0.1", rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        using var created = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        return X509CertificateLoader.LoadPkcs12(created.Export(X509ContentType.Pkcs12), null);
    }

    private static async Task<(Socket Client, SslStream Tls, Socket Server, EpollSocket Io)> HandshakeAsync(X509Certificate2 certificate)
    {
        var context = OpenSslContext.ForServer(certificate).ShouldNotBeNull(OpenSslContext.Unavailable);
        var (client, server, io) = await PairAsync();
        // The certificate OpenSSL shows must be the one it was given.
        var tls = new SslStream(new NetworkStream(client, ownsSocket: false), leaveInnerStreamOpen: false,
            (_, presented, _, _) => presented is not null && presented.GetCertHashString() == certificate.GetCertHashString());
        var accepting = io.StartTlsAsync(context, CancellationToken.None);
        await tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions { TargetHost = "127.0.0.1", EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13 });
        await accepting.WaitAsync(TimeSpan.FromSeconds(10));
        io.Encrypted.ShouldBeTrue();
        return (client, tls, server, io);
    }

    /// <summary>The other way round: OpenSSL on the loop's socket is the client, SslStream the server.</summary>
    private static async Task<(Socket Peer, SslStream Tls, Socket Socket, EpollSocket Io)> ConnectAsync(X509Certificate2 certificate)
    {
        var context = OpenSslContext.ForClient().ShouldNotBeNull(OpenSslContext.Unavailable);
        var (peer, socket, io) = await PairAsync();
        var tls = new SslStream(new NetworkStream(peer, ownsSocket: false), leaveInnerStreamOpen: false);
        var accepting = tls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions { ServerCertificate = certificate });
        await io.StartTlsAsync(context, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        await accepting.WaitAsync(TimeSpan.FromSeconds(10));
        io.Encrypted.ShouldBeTrue();
        return (peer, tls, socket, io);
    }

    private static async Task<(Socket Client, Socket Server, EpollSocket Io)> PairAsync()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        var accepting = listener.AcceptAsync();
        await client.ConnectAsync(listener.LocalEndPoint!);
        var server = await accepting;
        return (client, server, EpollSockets.Attach(server)!);
    }

    private static async Task<byte[]> ReceiveExactlyAsync(EpollSocket io, int length)
    {
        var received = new byte[length];
        var at = 0;
        while (at < received.Length)
        {
            var read = await io.ReceiveAsync(received.AsMemory(at)).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            read.ShouldBeGreaterThan(0);
            at += read;
        }

        return received;
    }
}
