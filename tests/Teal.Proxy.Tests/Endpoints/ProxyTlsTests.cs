using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using Teal.Proxy.Endpoints;
using Teal.Proxy.Tls;
using static Teal.Proxy.Tests.Endpoints.ProxyServersFixture;

namespace Teal.Proxy.Tests.Endpoints;

/// <summary>Clients that ask for TLS get it from the proxy, with the certificate Teal generated.</summary>
[Collection(ProxyServersGroup.Name)]
public sealed class ProxyTlsTests(ProxyServersFixture servers) : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("teal-proxy-tls-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public async Task GeneratedCertificate_IsKeptWithAPrivateKeyAndReusedAtTheNextStart()
    {
        using var first = ProxyCertificate.LoadOrCreate(_directory);
        using var again = ProxyCertificate.LoadOrCreate(_directory);

        ProxyCertificate.Fingerprint(again).ShouldBe(ProxyCertificate.Fingerprint(first));
        File.GetUnixFileMode(Path.Combine(_directory, ProxyCertificate.KeyFile)).ShouldBe(UnixFileMode.UserRead | UnixFileMode.UserWrite);
        (await File.ReadAllTextAsync(Path.Combine(_directory, ProxyCertificate.CertificateFile))).ShouldNotContain("PRIVATE KEY");
    }

    [Fact]
    public async Task NpgsqlWithSslModeRequireAndVerifyFull_TalkThroughTls_AndMoveAcrossASwitchover()
    {
        await using var endpoint = Start(requireTls: false);
        var root = Path.Combine(_directory, ProxyCertificate.CertificateFile);
        await using var require = await OpenAsync(endpoint, SslMode.Require);
        await using var verifyFull = await OpenAsync(endpoint, SslMode.VerifyFull, root);
        await using var plain = await OpenAsync(endpoint, SslMode.Disable);

        // verify-full opening at all proves TLS with this certificate; plaintext still works when not required.
        (await ScalarAsync<int>(plain, "select 1")).ShouldBe(1);
        (await ScalarAsync<int>(verifyFull, "select inet_server_port()")).ShouldBe(servers.Blue.Port);

        var drained = await SwitchAsync(endpoint, servers.GreenTarget);

        drained.Moving.ShouldBe(3);
        (await ScalarAsync<int>(require, "select inet_server_port()")).ShouldBe(servers.Green.Port);
        (await ScalarAsync<int>(verifyFull, "select inet_server_port()")).ShouldBe(servers.Green.Port);
        using var rootCertificate = X509Certificate2.CreateFromPem(File.ReadAllText(root));
        endpoint.TlsFingerprint.ShouldBe(ProxyCertificate.Fingerprint(rootCertificate));
    }

    [Fact]
    public async Task NpgsqlWithDirectTls_LogsInWithoutAnSslRequest_AndMovesAcrossASwitchover()
    {
        // sslnegotiation=direct (PostgreSQL 17's clients): the ClientHello is the first thing sent.
        await using var endpoint = Start(requireTls: true);
        var root = Path.Combine(_directory, ProxyCertificate.CertificateFile);
        await using var require = await OpenAsync(endpoint, SslMode.Require, direct: true);
        await using var verifyFull = await OpenAsync(endpoint, SslMode.VerifyFull, root, direct: true);

        (await ScalarAsync<int>(verifyFull, "select inet_server_port()")).ShouldBe(servers.Blue.Port);

        var drained = await SwitchAsync(endpoint, servers.GreenTarget);

        drained.Moving.ShouldBe(2);
        (await ScalarAsync<int>(require, "select inet_server_port()")).ShouldBe(servers.Green.Port);
        (await ScalarAsync<int>(verifyFull, "select inet_server_port()")).ShouldBe(servers.Green.Port);
    }

    [Fact]
    public async Task DirectTls_WithoutAlpn_IsClosedBeforeTheLogin()
    {
        // Nothing but ALPN tells a PostgreSQL client's direct TLS from another protocol's TLS sent
        // to this port (a browser's, say): PostgreSQL 17 refuses it, and so does the proxy.
        await using var endpoint = Start(requireTls: false);
        using var client = new System.Net.Sockets.TcpClient();
        await client.ConnectAsync(endpoint.LocalEndPoint);
        await using var tls = await HandshakeAsync(client.GetStream(), alpn: []);
        tls.NegotiatedApplicationProtocol.ShouldBe(default);
        var startup = Teal.Proxy.Protocol.MessageWriter.Startup(new Dictionary<string, string> { ["user"] = AppUser, ["database"] = "postgres" });
        await tls.WriteAsync(startup);
        await tls.FlushAsync();

        // No authentication request comes back, only the end of the connection.
        var answer = new byte[1];
        (await ReadOrEndAsync(tls, answer).WaitAsync(TimeSpan.FromSeconds(10))).ShouldBe(0);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ClientOfferingAlpn_WithoutPostgresql_FailsTheHandshake_WithIt_AgreesOnIt(bool direct)
    {
        // PostgreSQL 17 answers a client that offers only other protocols with the fatal
        // "no_application_protocol" alert, after an SSLRequest too (checked against 17.10).
        await using var endpoint = Start(requireTls: false);
        foreach (var (alpn, agrees) in new[] { (new[] { "http/1.1" }, false), (["http/1.1", "postgresql"], true) })
        {
            using var client = new System.Net.Sockets.TcpClient();
            await client.ConnectAsync(endpoint.LocalEndPoint);
            var stream = client.GetStream();
            if (!direct)
            {
                var request = new byte[8];
                System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(request, 8);
                System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(request.AsSpan(4), Teal.Proxy.Protocol.PostgresWire.SslRequestCode);
                await stream.WriteAsync(request);
                var answer = new byte[1];
                await stream.ReadExactlyAsync(answer);
                answer[0].ShouldBe((byte)'S');
            }

            if (agrees)
            {
                await using var tls = await HandshakeAsync(stream, alpn);
                tls.NegotiatedApplicationProtocol.ToString().ShouldBe("postgresql");
            }
            else
            {
                await Should.ThrowAsync<System.Security.Authentication.AuthenticationException>(HandshakeAsync(stream, alpn));
            }
        }
    }

    private async Task<System.Net.Security.SslStream> HandshakeAsync(Stream stream, string[] alpn)
    {
        using var root = X509Certificate2.CreateFromPem(File.ReadAllText(Path.Combine(_directory, ProxyCertificate.CertificateFile)));
        var rootData = root.RawData;
        var tls = new System.Net.Security.SslStream(
            stream, leaveInnerStreamOpen: false, (_, presented, _, _) => presented is not null && presented.GetRawCertData().AsSpan().SequenceEqual(rootData));
        var options = new System.Net.Security.SslClientAuthenticationOptions { TargetHost = "localhost" };
        if (alpn.Length > 0)
        {
            options.ApplicationProtocols = [.. alpn.Select(p => new System.Net.Security.SslApplicationProtocol(p))];
        }

        try
        {
            await tls.AuthenticateAsClientAsync(options);
            return tls;
        }
        catch
        {
            await tls.DisposeAsync();
            throw;
        }
    }

    [Fact]
    public async Task SslModeRequire_AgainstAnEndpointWithoutCertificate_IsRefusedByTheClient()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);

        await Should.ThrowAsync<NpgsqlException>(OpenAsync(endpoint, SslMode.Require));
    }

    [Fact]
    public async Task VerifyFull_AgainstAnotherRoot_IsRefusedByTheClient()
    {
        await using var endpoint = Start(requireTls: false);
        var otherDirectory = Directory.CreateTempSubdirectory("teal-proxy-tls-other-").FullName;
        try
        {
            using var other = ProxyCertificate.LoadOrCreate(otherDirectory);
            await Should.ThrowAsync<NpgsqlException>(OpenAsync(endpoint, SslMode.VerifyFull, Path.Combine(otherDirectory, ProxyCertificate.CertificateFile)));
        }
        finally
        {
            Directory.Delete(otherDirectory, recursive: true);
        }
    }

    [Fact]
    public async Task RequireTls_RefusesAPlaintextClient_AndPsqlConnectsWithVerifyFull()
    {
        await using var endpoint = Start(requireTls: true);

        var error = await Should.ThrowAsync<PostgresException>(OpenAsync(endpoint, SslMode.Disable));
        error.SqlState.ShouldBe(PostgresErrorCodes.InvalidAuthorizationSpecification);
        error.MessageText.ShouldBe("Teal endpoint tls accepts only TLS connections; connect with sslmode=require or stronger");

        foreach (var mode in new[] { "require", "verify-full" })
        {
            var conninfo = $"host=127.0.0.1 port={endpoint.LocalEndPoint.Port.ToString(CultureInfo.InvariantCulture)} user={AppUser} dbname=postgres sslmode={mode} sslrootcert={Path.Combine(_directory, ProxyCertificate.CertificateFile)}";
            var start = new ProcessStartInfo("psql") { ArgumentList = { "-X", "-At", "-c", "select 'ok'", conninfo }, RedirectStandardOutput = true, RedirectStandardError = true };
            start.Environment["PGPASSWORD"] = AppPassword;
            using var psql = Process.Start(start)!; // Start returns null only for shell-executed documents.
            var output = await psql.StandardOutput.ReadToEndAsync();
            var stderr = await psql.StandardError.ReadToEndAsync();
            await psql.WaitForExitAsync();
            psql.ExitCode.ShouldBe(0, $"sslmode={mode}: {stderr}");
            output.Trim().ShouldBe("ok");
        }
    }

    /// <summary>
    /// A session the proxy closes (its server ended it, or the endpoint stops) gets TLS's
    /// close_notify after the error, as from PostgreSQL itself: psql then reports the close, not
    /// a connection lost ("SSL SYSCALL error: EOF detected").
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task PsqlOverTls_IsToldOfTheClose_AsPostgresTellsIt(bool endpointStops)
    {
        await using var endpoint = Start(requireTls: true);
        var marker = endpointStops ? "select pg_sleep(30) -- stops" : "select pg_sleep(30) -- terminated";
        var conninfo = $"host=127.0.0.1 port={endpoint.LocalEndPoint.Port.ToString(CultureInfo.InvariantCulture)} user={AppUser} dbname=postgres sslmode=require";
        var start = new ProcessStartInfo("psql") { ArgumentList = { "-X", "-At", "-c", marker, conninfo }, RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment["PGPASSWORD"] = AppPassword;
        using var psql = Process.Start(start)!; // Start returns null only for shell-executed documents.
        var stderr = psql.StandardError.ReadToEndAsync();
        var running = $"select count(*) from pg_stat_activity where query = '{marker}' and state = 'active'";
        (await EventuallyAsync(async () => await servers.Blue.ScalarAsync<long>(running) == 1)).ShouldBeTrue();

        if (endpointStops)
        {
            await endpoint.StopAsync();
        }

        // Ends the backend either way (one cut by the stop sleeps on without its client).
        await servers.Blue.ExecuteAsync($"select pg_terminate_backend(pid) from pg_stat_activity where query = '{marker}'");
        await psql.WaitForExitAsync();

        var told = await stderr;
        psql.ExitCode.ShouldNotBe(0);
        told.ShouldContain(endpointStops ? "Teal endpoint tls is shutting down; reconnect" : "terminating connection due to administrator command");
        told.ShouldContain("SSL connection has been closed unexpectedly");
        told.ShouldNotContain("EOF detected");
    }

    [Fact]
    public async Task WithOpenSslTurnedOff_SslStreamEndsTheClientsTls()
    {
        // The escape hatch (and the path where the event loop is off): .NET's SslStream instead
        // of OpenSSL on the loop's socket. Other tests starting TLS meanwhile take it too, which
        // they pass on as well.
        Environment.SetEnvironmentVariable(OpenSslContext.Variable, "0");
        try
        {
            await using var endpoint = Start(requireTls: true);
            await using var connection = await OpenAsync(endpoint, SslMode.VerifyFull, Path.Combine(_directory, ProxyCertificate.CertificateFile));
            await using var direct = await OpenAsync(endpoint, SslMode.Require, direct: true);

            (await ScalarAsync<int>(connection, "select inet_server_port()")).ShouldBe(servers.Blue.Port);
            (await ScalarAsync<int>(direct, "select inet_server_port()")).ShouldBe(servers.Blue.Port);
            OpenSslContext.Unavailable.ShouldBe($"{OpenSslContext.Variable}=0");
        }
        finally
        {
            Environment.SetEnvironmentVariable(OpenSslContext.Variable, null);
        }
    }

    private ProxyEndpoint Start(bool requireTls) =>
        ProxyEndpoint.Start("tls", new IPEndPoint(IPAddress.Loopback, 0), servers.BlueTarget,
            new ProxyOptions { Certificate = ProxyCertificate.LoadOrCreate(_directory), RequireTls = requireTls }, NullLogger.Instance, TimeProvider.System, verifiers: servers.Verifiers);

    private static async Task<int> ReadOrEndAsync(Stream stream, byte[] buffer)
    {
        try
        {
            return await stream.ReadAsync(buffer);
        }
        catch (IOException)
        {
            return 0; // A reset is an end too.
        }
    }

    private async Task<NpgsqlConnection> OpenAsync(ProxyEndpoint endpoint, SslMode mode, string? root = null, bool direct = false)
    {
        var builder = new NpgsqlConnectionStringBuilder(Through(endpoint, servers.Blue))
        {
            SslMode = mode,
            Pooling = false,
            SslNegotiation = direct ? SslNegotiation.Direct : SslNegotiation.Postgres,
        };
        if (root is not null)
        {
            builder.RootCertificate = root;
        }

        var connection = new NpgsqlConnection(builder.ConnectionString);
        await connection.OpenAsync();
        return connection;
    }
}
