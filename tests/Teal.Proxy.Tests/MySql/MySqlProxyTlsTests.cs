using System.Diagnostics;
using System.Globalization;
using MySqlConnector;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;
using Teal.Proxy.Tests.Endpoints;
using Teal.Proxy.Tls;
using Teal.Testing;
using static Teal.Proxy.Tests.MySql.MySqlProxyServersFixture;

namespace Teal.Proxy.Tests.MySql;

/// <summary>
/// MySQL clients on TLS to Teal's proxy, which ends their TLS with its certificate and reaches
/// the MariaDB server in plain text: the server never sees the client's SSL request, so every
/// login packet is renumbered on its way. Real clients (MySqlConnector, the mariadb command-line
/// client) check the numbering: one packet off and they report it out of order.
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

    private static async Task<(int Exit, string Output, string Error)> MariaDbCliAsync(int port, string user, string password, string[] tls, string sql)
    {
        var start = new ProcessStartInfo("mariadb") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in (string[])["--no-defaults", "--batch", "-h", "127.0.0.1", "-P", port.ToString(CultureInfo.InvariantCulture), "-u", user, .. tls, "-e", sql])
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment["MYSQL_PWD"] = password;
        using var process = Process.Start(start)!; // Start returns null only for shell-executed documents.
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        return (process.ExitCode, await output, await error);
    }
}
