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
/// TLS on either leg of a MySQL connection through Teal's proxy: clients' TLS ended with the
/// proxy's certificate, and the proxy's own to a MariaDB server that has a certificate and
/// refuses plain text (<c>require_secure_transport</c>), as the endpoint's server TLS mode says.
/// Each side numbers the login's packets after the SSL request it saw, so with one leg on TLS
/// every login packet is renumbered on its way. Real clients (MySqlConnector, the mariadb
/// command-line client) check the numbering: one packet off and they report it out of order.
/// </summary>
[Collection(MySqlProxyServersGroup.Name)]
public sealed class MySqlProxyTlsTests(MySqlProxyServersFixture servers) : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("teal-mysql-tls-").FullName;

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private string CertificateFile => Path.Combine(_directory, ProxyCertificate.CertificateFile);

    [Fact]
    public async Task MySqlConnector_VerifyingTheProxysCertificate_LogsInQueriesAndIsIdleForTheDrain()
    {
        using var certificate = ProxyCertificate.LoadOrCreate(_directory);
        await using var endpoint = StartEndpoint(servers.BlueTarget, options: new ProxyOptions { Certificate = certificate });
        await servers.Blue.ExecuteAsync(
            """
            DROP TABLE IF EXISTS app.tls_rows;
            CREATE TABLE app.tls_rows AS SELECT seq AS id, REPEAT(MD5(seq), 8) AS pad FROM app.seq_1_to_20000;
            """);

        // VerifyCA with the proxy's certificate as the only root: only a TLS session with the proxy opens.
        await using var connection = new MySqlConnection(TlsThrough(endpoint, MySqlSslMode.VerifyCA));
        await connection.OpenAsync();
        (await ScalarAsync<long>(connection, "SELECT SUM(LENGTH(pad)) FROM tls_rows")).ShouldBe(20_000L * 256);

        // A result of several MB through the TLS pump, the same as a direct read.
        var rows = 0;
        await using (var command = new MySqlCommand("SELECT id, pad FROM tls_rows ORDER BY id", connection))
        await using (var reader = await command.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                reader.GetString(1).Length.ShouldBe(256);
                rows++;
            }
        }

        rows.ShouldBe(20_000);
        await using (var prepared = new MySqlCommand("SELECT pad FROM tls_rows WHERE id = @id", connection))
        {
            prepared.Parameters.AddWithValue("@id", 7);
            await prepared.PrepareAsync();
            (await prepared.ExecuteScalarAsync()).ShouldBe(await servers.Blue.ScalarAsync<string>("SELECT pad FROM app.tls_rows WHERE id = 7"));
        }

        // Idle outside a transaction: the drain closes it at once, as a plaintext one.
        var drained = await endpoint.DrainAsync(TimeSpan.FromSeconds(20), CancellationToken.None);
        drained.ShouldBe(new EndpointDrainResult(1, 0));
        endpoint.Stats.Errors.ShouldBe(0);
    }

    [Fact]
    public async Task WrongPasswordOverTls_GetsTheServersAccessDenied()
    {
        using var certificate = ProxyCertificate.LoadOrCreate(_directory);
        await using var endpoint = StartEndpoint(servers.BlueTarget, options: new ProxyOptions { Certificate = certificate });

        var wrong = new MySqlConnectionStringBuilder(TlsThrough(endpoint, MySqlSslMode.Required)) { Password = "not-the-password" };
        await using var connection = new MySqlConnection(wrong.ConnectionString);
        var error = await Should.ThrowAsync<MySqlException>(connection.OpenAsync());

        // The server's own ERR, numbered for the client: anything else reads as a protocol error.
        error.ErrorCode.ShouldBe(MySqlErrorCode.AccessDenied, error.Message);
        error.Message.ShouldContain("Access denied for user 'app'");
    }

    [Fact]
    public async Task MariaDbClient_Ed25519AfterAnAuthenticationSwitch_OverVerifiedTls()
    {
        if (await servers.Blue.ScalarAsync<long>("SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'ed25519'") == 0)
        {
            await servers.Blue.ExecuteAsync("INSTALL SONAME 'auth_ed25519'");
        }

        await servers.Blue.ExecuteAsync(
            """
            DROP USER IF EXISTS ed@'%';
            CREATE USER ed@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed-secret-2');
            GRANT SELECT ON app.* TO ed@'%';
            """);
        using var certificate = ProxyCertificate.LoadOrCreate(_directory);
        await using var endpoint = StartEndpoint(servers.BlueTarget, options: new ProxyOptions { Certificate = certificate });

        // The client offers mysql_native_password, the server switches it to client_ed25519 and
        // the client answers: two login packets each way after the SSL request.
        var (exit, output, error) = await MariaDbCliAsync(endpoint.LocalEndPoint.Port, "ed", "ed-secret-2",
            ["--ssl", "--ssl-ca", CertificateFile, "--ssl-verify-server-cert"], "status");
        exit.ShouldBe(0, error);
        output.ShouldContain("Cipher in use is");
        output.ShouldContain("Current user:\t\ted@");

        (exit, _, error) = await MariaDbCliAsync(endpoint.LocalEndPoint.Port, "ed", "wrong", ["--ssl", "--ssl-ca", CertificateFile], "SELECT 1");
        exit.ShouldNotBe(0);
        error.ShouldContain("Access denied for user 'ed'");
    }

    [Fact]
    public async Task PooledTlsConnections_ClosedByTheDrain_ThePoolOpensNewOnesOnTheNewRoute()
    {
        // What applications do: MySqlConnector's pool keeps the TLS sessions the drain closes
        // (without a TLS close_notify: the proxy ends the socket between transactions).
        using var certificate = ProxyCertificate.LoadOrCreate(_directory);
        await using var endpoint = StartEndpoint(servers.BlueTarget, options: new ProxyOptions { Certificate = certificate });
        var pooled = new MySqlConnectionStringBuilder(TlsThrough(endpoint, MySqlSslMode.Required)) { Pooling = true, MinimumPoolSize = 0, MaximumPoolSize = 4 }.ConnectionString;
        try
        {
            var opened = await Task.WhenAll(Enumerable.Range(0, 3).Select(async _ =>
            {
                var connection = new MySqlConnection(pooled);
                await connection.OpenAsync();
                return connection;
            }));
            foreach (var connection in opened)
            {
                (await ScalarAsync<long>(connection, "SELECT @@port")).ShouldBe(servers.Blue.Port);
                await connection.DisposeAsync(); // back to the pool, open through the proxy
            }

            await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
            (await endpoint.DrainAsync(TimeSpan.FromSeconds(20), CancellationToken.None)).ShouldBe(new EndpointDrainResult(3, 0));
            await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);
            await endpoint.ResumeAsync(CancellationToken.None);

            for (var i = 0; i < 6; i++)
            {
                await using var connection = new MySqlConnection(pooled);
                await connection.OpenAsync();
                (await ScalarAsync<long>(connection, "SELECT @@port")).ShouldBe(servers.Green.Port);
            }
        }
        finally
        {
            MySqlConnection.ClearAllPools();
        }
    }

    [Fact]
    public async Task RequireTls_PlaintextClientRefusedWithAnErrorSayingSo_TlsClientServed()
    {
        using var certificate = ProxyCertificate.LoadOrCreate(_directory);
        await using var endpoint = StartEndpoint(servers.BlueTarget, name: "orders", options: new ProxyOptions { Certificate = certificate, RequireTls = true });

        await using (var plain = new MySqlConnection(TlsThrough(endpoint, MySqlSslMode.None)))
        {
            var error = await Should.ThrowAsync<MySqlException>(plain.OpenAsync());
            error.Number.ShouldBe(3159, error.Message); // ER_SECURE_TRANSPORT_REQUIRED, as a server with require_secure_transport
            error.Message.ShouldContain("Teal endpoint orders accepts only TLS connections");
        }

        var (exit, _, stderr) = await MariaDbCliAsync(endpoint.LocalEndPoint.Port, AppUser, AppPassword, ["--skip-ssl"], "SELECT 1");
        exit.ShouldNotBe(0);
        stderr.ShouldContain("accepts only TLS connections");

        await using var secure = new MySqlConnection(TlsThrough(endpoint, MySqlSslMode.Required));
        await secure.OpenAsync();
        (await ScalarAsync<int>(secure, "SELECT 41 + 1")).ShouldBe(42);
        (await ProxyServersFixture.EventuallyAsync(() => endpoint.Stats.Active == 1)).ShouldBeTrue($"active: {endpoint.Stats.Active}");
    }

    private string TlsThrough(ProxyEndpoint endpoint, MySqlSslMode mode) =>
        new MySqlConnectionStringBuilder(Through(endpoint, ssl: mode)) { SslCa = mode == MySqlSslMode.VerifyCA ? CertificateFile : "" }.ConnectionString;

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
            (await SucceedingCliAsync(endpoint, "ed", "ed-secret-2", ["--skip-ssl"], "SELECT CURRENT_USER()")).ShouldContain("ed@%");
            // The client's exit reaches the proxy's session a moment later; the drain then finds
            // only the open connection.
            (await ProxyServersFixture.EventuallyAsync(() => endpoint.Stats.Active == 1)).ShouldBeTrue();
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
            (await SucceedingCliAsync(endpoint, "ed", "ed-secret-2", ["--ssl", "--ssl-ca", proxyRoot, "--ssl-verify-server-cert"], "SELECT CURRENT_USER()")).ShouldContain("ed@%");
            (await SucceedingCliAsync(endpoint, "ed", "ed-secret-2", ["--skip-ssl"], "SELECT CURRENT_USER()")).ShouldContain("ed@%");
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

    private static async Task<string> SucceedingCliAsync(ProxyEndpoint endpoint, string user, string password, string[] tls, string sql)
    {
        var (exit, output, error) = await MariaDbCliAsync(endpoint.LocalEndPoint.Port, user, password, tls, sql);
        exit.ShouldBe(0, error);
        return output;
    }
}
