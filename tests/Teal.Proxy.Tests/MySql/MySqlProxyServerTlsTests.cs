using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using MySqlConnector;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;
using Teal.Proxy.Tests.Endpoints;
using Teal.Proxy.Tls;
using Teal.Testing;
using static Teal.Proxy.Tests.MySql.MySqlProxyServersFixture;

namespace Teal.Proxy.Tests.MySql;

/// <summary>
/// Teal's proxy on TLS to a MariaDB server that has a certificate and refuses plain text
/// (<c>require_secure_transport</c>), as the endpoint's server TLS mode says: the proxy sends
/// its own SSL request, so a plaintext client's login packets are numbered one lower than the
/// server's, and a TLS client's the same again. Each way is checked with real clients, an
/// authentication switch included.
/// </summary>
[Collection(MySqlProxyServersGroup.Name)]
public sealed class MySqlProxyServerTlsTests(MySqlProxyServersFixture servers) : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("teal-mysql-server-tls-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public async Task ServerRequiringSecureTransport_PlainAndTlsClientsLogInThroughTheProxysTls()
    {
        var serverCertificate = WriteServerCertificate();
        await using var server = await MariaDbServer.StartAsync(parameters: new Dictionary<string, string>
        {
            ["ssl-cert"] = Path.Combine(_directory, "server.crt"),
            ["ssl-key"] = Path.Combine(_directory, "server.key"),
        });
        await server.ExecuteAsync(
            $"""
            CREATE DATABASE app;
            CREATE USER {AppUser}@'%' IDENTIFIED BY '{AppPassword}';
            GRANT ALL PRIVILEGES ON app.* TO {AppUser}@'%';
            INSTALL SONAME 'auth_ed25519';
            CREATE USER ed@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed-secret-2');
            SET GLOBAL require_secure_transport = ON;
            """);
        var target = new EndpointTarget("secure", server.Host, server.Port, "app");
        using var proxyCertificate = ProxyCertificate.LoadOrCreate(_directory);
        var proxyRoot = Path.Combine(_directory, ProxyCertificate.CertificateFile);

        // prefer (the default), no certificate of its own: plaintext clients, TLS to the server.
        await using (var endpoint = StartEndpoint(target, options: new ProxyOptions()))
        {
            await using var plain = new MySqlConnection(Through(endpoint, ssl: MySqlSslMode.None));
            await plain.OpenAsync();
            (await ServerSideCipherAsync(plain)).ShouldNotBeEmpty("the proxy's session with the server is on TLS");
            (await MariaDbCliAsync(endpoint, "ed", "ed-secret-2", ["--skip-ssl"], "SELECT CURRENT_USER()")).ShouldContain("ed@%");
            (await endpoint.DrainAsync(TimeSpan.FromSeconds(20), CancellationToken.None)).ShouldBe(new EndpointDrainResult(1, 0));
        }

        // verify-full against the server's certificate, and TLS to clients: both legs on TLS.
        var roots = new X509Certificate2Collection(serverCertificate);
        await using (var endpoint = StartEndpoint(target, options: new ProxyOptions { Certificate = proxyCertificate, ServerTls = ServerTlsMode.VerifyFull, ServerTlsRoots = roots }))
        {
            var verified = new MySqlConnectionStringBuilder(Through(endpoint, ssl: MySqlSslMode.VerifyCA)) { SslCa = proxyRoot };
            await using var secure = new MySqlConnection(verified.ConnectionString);
            await secure.OpenAsync();
            (await ServerSideCipherAsync(secure)).ShouldNotBeEmpty();
            (await ScalarAsync<string>(secure, "SELECT CURRENT_USER()")).ShouldBe($"{AppUser}@%");
            (await MariaDbCliAsync(endpoint, "ed", "ed-secret-2", ["--ssl", "--ssl-ca", proxyRoot, "--ssl-verify-server-cert"], "SELECT CURRENT_USER()")).ShouldContain("ed@%");
            (await MariaDbCliAsync(endpoint, "ed", "ed-secret-2", ["--skip-ssl"], "SELECT CURRENT_USER()")).ShouldContain("ed@%");
            var wrong = await Should.ThrowAsync<MySqlException>(OpenAsync(new MySqlConnectionStringBuilder(verified.ConnectionString) { Password = "wrong" }.ConnectionString));
            wrong.ErrorCode.ShouldBe(MySqlErrorCode.AccessDenied, wrong.Message);
        }

        // verify-full against roots that did not sign the server's certificate: refused, and said why.
        await using (var endpoint = StartEndpoint(target, options: new ProxyOptions { ServerTls = ServerTlsMode.VerifyFull, ServerTlsRoots = [proxyCertificate] }))
        {
            var error = await Should.ThrowAsync<MySqlException>(OpenAsync(Through(endpoint, ssl: MySqlSslMode.None)));
            error.Message.ShouldContain("TLS with instance secure");
            endpoint.Stats.Errors.ShouldBe(1);
        }

        // disable: the server's own refusal reaches the client (MariaDB 10.11 words it as a denied
        // login; 11.x has ER_SECURE_TRANSPORT_REQUIRED, 3159).
        await using (var endpoint = StartEndpoint(target, options: new ProxyOptions { ServerTls = ServerTlsMode.Disable }))
        {
            var error = await Should.ThrowAsync<MySqlException>(OpenAsync(Through(endpoint, ssl: MySqlSslMode.None)));
            error.Number.ShouldBeOneOf(1045, 3159);
        }
    }

    [Fact]
    public async Task ServerTlsRequire_ServerWithoutACertificate_ClientToldWhy()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, name: "orders", options: new ProxyOptions { ServerTls = ServerTlsMode.Require });

        var error = await Should.ThrowAsync<MySqlException>(OpenAsync(Through(endpoint)));

        error.Message.ShouldContain("instance blue");
        error.Message.ShouldContain("does not offer TLS, and the endpoint's server TLS mode is require");
        endpoint.Stats.Errors.ShouldBe(1);
        (await ProxyServersFixture.EventuallyAsync(() => endpoint.Stats.Active == 0)).ShouldBeTrue();
    }

    private static async Task OpenAsync(string connectionString)
    {
        await using var connection = new MySqlConnection(connectionString);
        await connection.OpenAsync();
    }

    private static Task<string> ServerSideCipherAsync(MySqlConnection connection) =>
        ScalarAsync<string>(connection, "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'");

    /// <summary>A self-signed certificate for 127.0.0.1, in files the server's OS user can read.</summary>
    private X509Certificate2 WriteServerCertificate()
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=teal-test-mariadb", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        File.WriteAllText(Path.Combine(_directory, "server.crt"), certificate.ExportCertificatePem());
        File.WriteAllText(Path.Combine(_directory, "server.key"), key.ExportPkcs8PrivateKeyPem());
        foreach (var file in new[] { "server.crt", "server.key" })
        {
            File.SetUnixFileMode(Path.Combine(_directory, file), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        }

        File.SetUnixFileMode(_directory, (UnixFileMode)0b111_101_101);
        return X509CertificateLoader.LoadCertificate(certificate.Export(X509ContentType.Cert));
    }

    private static async Task<string> MariaDbCliAsync(ProxyEndpoint endpoint, string user, string password, string[] tls, string sql)
    {
        var start = new ProcessStartInfo("mariadb") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in (string[])["--no-defaults", "--batch", "-h", "127.0.0.1", "-P", endpoint.LocalEndPoint.Port.ToString(CultureInfo.InvariantCulture), "-u", user, .. tls, "-e", sql])
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment["MYSQL_PWD"] = password;
        using var process = Process.Start(start)!; // Start returns null only for shell-executed documents.
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        process.ExitCode.ShouldBe(0, await error);
        return await output;
    }
}
