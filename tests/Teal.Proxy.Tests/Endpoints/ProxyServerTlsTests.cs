using System.Diagnostics;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;
using Teal.Proxy.Sessions;
using Teal.Proxy.Tls;
using Teal.Testing;
using static Teal.Proxy.Tests.Endpoints.ProxyServersFixture;

namespace Teal.Proxy.Tests.Endpoints;

/// <summary>
/// TLS between the proxy and the servers, per endpoint as libpq's sslmode: a PostgreSQL 17 with
/// ssl = on and a certificate from a test CA ("secure"), beside the shared blue, which has ssl off.
/// </summary>
[Collection(ProxyServersGroup.Name)]
public sealed class ProxyServerTlsTests(ProxyServersFixture servers) : IAsyncLifetime
{
    private readonly string _directory = Directory.CreateTempSubdirectory("teal-server-tls-").FullName;
    private PostgresServer? _secure;

    private PostgresServer Secure => _secure ?? throw new InvalidOperationException("not started");

    private EndpointTarget SecureTarget => new("secure", "127.0.0.1", Secure.Port, "postgres");

    private string RootFile => Path.Combine(_directory, "root.crt");

    private string OtherRootFile => Path.Combine(_directory, "other-root.crt");

    public async Task InitializeAsync()
    {
        _secure = await PostgresServer.StartAsync("17");
        var (root, server) = IssueServerCertificate();
        await File.WriteAllTextAsync(RootFile, root.ExportCertificatePem());
        var (other, _) = IssueServerCertificate();
        await File.WriteAllTextAsync(OtherRootFile, other.ExportCertificatePem());

        // The server reads its key as its own OS user, and only from a file no one else can read.
        var certificateFile = Path.Combine(Secure.Server.Directory, "server.crt");
        var keyFile = Path.Combine(Secure.Server.Directory, "server.key");
        await File.WriteAllTextAsync(certificateFile, server.ExportCertificatePem());
        await File.WriteAllTextAsync(keyFile, server.GetRSAPrivateKey()!.ExportRSAPrivateKeyPem());
        File.SetUnixFileMode(keyFile, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        if (Secure.Server.OsUser is { } user)
        {
            using var chown = Process.Start("chown", [user, certificateFile, keyFile]);
            await chown.WaitForExitAsync();
        }

        await Secure.ExecuteAsync($"alter system set ssl_cert_file = '{certificateFile}'");
        await Secure.ExecuteAsync($"alter system set ssl_key_file = '{keyFile}'");
        await Secure.ExecuteAsync("alter system set ssl = on");
        await Secure.ExecuteAsync("select pg_reload_conf()");

        // The application's role with blue's very verifier, as a deployment's copy leaves it.
        var verifier = await servers.Blue.ScalarAsync<string>($"select rolpassword from pg_authid where rolname = '{AppUser}'");
        await Secure.ExecuteAsync($"create role {AppUser} login superuser password '{verifier}'");
        (await EventuallyAsync(async () => await Secure.ScalarAsync<string>("show ssl") == "on")).ShouldBeTrue();
    }

    public async Task DisposeAsync()
    {
        if (_secure is not null)
        {
            await _secure.DisposeAsync();
        }

        Directory.Delete(_directory, recursive: true);
    }

    [Theory]
    [InlineData(ServerTlsMode.Require, true)]
    [InlineData(ServerTlsMode.Prefer, true)]
    [InlineData(ServerTlsMode.Disable, false)]
    public async Task ServerLeg_IsEncryptedAsTheModeSays(ServerTlsMode mode, bool encrypted)
    {
        await using var endpoint = Start(SecureTarget, new ProxyOptions { ServerTls = mode }, new SecureVerifiers(this));
        await using var connection = await OpenAsync(endpoint, Secure);

        (await ScalarAsync<bool>(connection, "select ssl from pg_stat_ssl where pid = pg_backend_pid()")).ShouldBe(encrypted);
    }

    [Fact]
    public async Task Prefer_GoesOnInPlainText_WithAServerThatHasNoTls_AndRequireRefusesItWithTheReason()
    {
        await using (var prefer = Start(servers.BlueTarget, new ProxyOptions { ServerTls = ServerTlsMode.Prefer }))
        await using (var connection = await OpenAsync(prefer, servers.Blue))
        {
            (await ScalarAsync<bool>(connection, "select ssl from pg_stat_ssl where pid = pg_backend_pid()")).ShouldBeFalse();
        }

        await using var require = Start(servers.BlueTarget, new ProxyOptions { ServerTls = ServerTlsMode.Require });
        var error = await Should.ThrowAsync<PostgresException>(OpenAsync(require, servers.Blue));
        error.SqlState.ShouldBe("08006");
        error.MessageText.ShouldContain("does not accept TLS");
        error.MessageText.ShouldContain("require");
    }

    [Fact]
    public async Task VerifyFull_TrustsOnlyTheGivenRoot()
    {
        await using (var trusted = Start(SecureTarget, new ProxyOptions { ServerTls = ServerTlsMode.VerifyFull, ServerTlsRoots = Roots(RootFile) }, new SecureVerifiers(this)))
        await using (var connection = await OpenAsync(trusted, Secure))
        {
            (await ScalarAsync<bool>(connection, "select ssl from pg_stat_ssl where pid = pg_backend_pid()")).ShouldBeTrue();
        }

        await using var untrusted = Start(SecureTarget, new ProxyOptions { ServerTls = ServerTlsMode.VerifyFull, ServerTlsRoots = Roots(OtherRootFile) }, new SecureVerifiers(this));
        var error = await Should.ThrowAsync<PostgresException>(OpenAsync(untrusted, Secure));
        error.SqlState.ShouldBe("08006");
        error.MessageText.ShouldContain("TLS with the server failed");
    }

    [Fact]
    public async Task TlsOnBothLegs_ScramClientLogsIn_AndAMoveToAServerWithoutTlsIsRefusedUnderRequire()
    {
        // The client's TLS ends at the proxy and the proxy's starts at the server, so no channel
        // binding can cross: the proxy checks the password itself and logs in with its proof.
        using var certificate = ProxyCertificate.LoadOrCreate(_directory);
        await using var endpoint = Start(SecureTarget, new ProxyOptions { ServerTls = ServerTlsMode.Require, Certificate = certificate }, new SecureVerifiers(this));
        await using var connection = await OpenAsync(endpoint, Secure, SslMode.Require);
        (await ScalarAsync<bool>(connection, "select ssl from pg_stat_ssl where pid = pg_backend_pid()")).ShouldBeTrue();

        var drained = await SwitchAsync(endpoint, servers.BlueTarget);

        // The session was free to move, but require forbids the plain-text blue: closed, and counted.
        drained.Moving.ShouldBe(1);
        (await EventuallyAsync(() => endpoint.Stats.SessionsClosed == 1)).ShouldBeTrue();
        await Should.ThrowAsync<Exception>(ScalarAsync<int>(connection, "select 1"));
        endpoint.Stats.SessionsMoved.ShouldBe(0);
    }

    [Fact]
    public async Task EncryptedSession_MovesBetweenEncryptedServers_WithItsPreparedStatement()
    {
        await using var endpoint = Start(SecureTarget, new ProxyOptions { ServerTls = ServerTlsMode.Prefer }, new SecureVerifiers(this));
        await using var connection = await OpenAsync(endpoint, Secure);
        await using var command = new NpgsqlCommand("select ssl from pg_stat_ssl where pid = pg_backend_pid()", connection);
        await command.PrepareAsync();
        ((bool)(await command.ExecuteScalarAsync())!).ShouldBeTrue();

        // A switchover onto the same secure server (blue and green are alike here): the session
        // leaves, logs in again over TLS with the client's SCRAM proof, and goes on.
        var drained = await SwitchAsync(endpoint, SecureTarget with { Instance = "secure-again" });

        drained.Moving.ShouldBe(1);
        ((bool)(await command.ExecuteScalarAsync())!).ShouldBeTrue();
        endpoint.Stats.SessionsMoved.ShouldBe(1);
    }

    private static ProxyEndpoint Start(EndpointTarget target, ProxyOptions options, IScramVerifierSource? verifiers = null) =>
        ProxyEndpoint.Start("server-tls", new IPEndPoint(IPAddress.Loopback, 0), target, options, NullLogger.Instance, TimeProvider.System, verifiers: verifiers);

    private static async Task<NpgsqlConnection> OpenAsync(ProxyEndpoint endpoint, PostgresServer server, SslMode clientTls = SslMode.Disable)
    {
        var builder = new NpgsqlConnectionStringBuilder(Through(endpoint, server)) { SslMode = clientTls, Pooling = false };
        var connection = new NpgsqlConnection(builder.ConnectionString);
        await connection.OpenAsync();
        return connection;
    }

    private static X509Certificate2Collection Roots(string file)
    {
        var roots = new X509Certificate2Collection();
        roots.ImportFromPemFile(file);
        return roots;
    }

    /// <summary>A CA and a server certificate it signed for 127.0.0.1 and localhost.</summary>
    private static (X509Certificate2 Root, X509Certificate2 Server) IssueServerCertificate()
    {
        using var rootKey = RSA.Create(2048);
        var rootRequest = new CertificateRequest("CN=Teal test CA", rootKey, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        rootRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        rootRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        var now = DateTimeOffset.UtcNow;
        var root = rootRequest.CreateSelfSigned(now.AddDays(-1), now.AddDays(30));

        var serverKey = RSA.Create(2048);
        var serverRequest = new CertificateRequest("CN=127.0.0.1", serverKey, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        names.AddDnsName("localhost");
        serverRequest.CertificateExtensions.Add(names.Build());
        serverRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        serverRequest.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        using var signed = serverRequest.Create(root, now.AddDays(-1), now.AddDays(30), RandomNumberGenerator.GetBytes(8));
        return (root, signed.CopyWithPrivateKey(serverKey));
    }

    private sealed class SecureVerifiers(ProxyServerTlsTests tests) : IScramVerifierSource
    {
        public async Task<string?> ReadAsync(EndpointTarget target, string role, CancellationToken cancellationToken) =>
            await tests.Secure.ScalarAsync<string>($"select rolpassword from pg_authid where rolname = '{role}'", cancellationToken: cancellationToken);
    }
}
