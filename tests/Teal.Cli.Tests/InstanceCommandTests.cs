using System.Text.Json;
using Teal.Postgres.Instances;
using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Cli.Tests;

/// <summary><c>teal instance …</c> and <c>teal endpoint …</c> against a real PostgreSQL 15.</summary>
public sealed class InstanceCommandTests(Postgres15Fixture postgres) : IClassFixture<Postgres15Fixture>, IAsyncLifetime
{
    private TealHost _teal = null!; // Set in InitializeAsync, before any test runs.

    public async Task InitializeAsync() => _teal = await TealHost.StartAsync();

    public async Task DisposeAsync() => await _teal.DisposeAsync();

    [Fact]
    public async Task AddListUrlRemove_PasswordOnlyInUrl()
    {
        var server = postgres.Server;

        var added = await Run("instance", "add", "blue", "--connection", server.Uri());
        var table = await Run("instance", "list");
        var json = await Run("instance", "list", "--output", "json");
        var url = await Run("instance", "url", "blue");

        added.ExitCode.ShouldBe(0, added.ToString());
        added.Stdout.ShouldStartWith($"instance blue registered: postgres 15.");
        table.Stdout.ShouldStartWith("NAME  ENGINE    VERSION");
        table.Stdout.ShouldContain($"blue  postgres  15.");
        table.Stdout.ShouldContain($"{server.Port}  postgres  postgres  writer  no");
        table.Stdout.ShouldNotContain(server.Password);
        json.Stdout.ShouldNotContain(server.Password);
        JsonDocument.Parse(json.Stdout).RootElement[0].GetProperty("port").GetInt32().ShouldBe(server.Port);
        url.Stdout.Trim().ShouldBe(server.Uri());

        var removed = await Run("instance", "remove", "blue");
        removed.ExitCode.ShouldBe(0, removed.ToString());
        (await Run("instance", "list", "--output", "json")).Stdout.Trim().ShouldBe("[]");
    }

    [Fact]
    public async Task CreateManaged_RemoveNeedsDeleteData()
    {
        var created = await Run("instance", "create", "managed", "--engine", "postgres", "--version", "15", "--parameter", "fsync=off");
        created.ExitCode.ShouldBe(0, created.ToString());
        created.Stdout.ShouldContain("instance managed created in ");
        (await Run("instance", "list")).Stdout.ShouldContain("writer  yes");

        var refused = await Run("instance", "remove", "managed");
        refused.ExitCode.ShouldBe(1, refused.ToString());
        refused.ErrorLines[1].ShouldBe("hint: if that is what you want: teal instance remove managed --delete-data");

        (await Run("instance", "remove", "managed", "--delete-data")).ExitCode.ShouldBe(0);
        Directory.Exists(Path.Combine(_teal.DataDirectory, "instances", "managed")).ShouldBeFalse();
    }

    [Fact]
    public async Task Endpoint_AddListRemove()
    {
        (await Run("instance", "add", "blue", "--connection", postgres.Server.Uri())).ExitCode.ShouldBe(0);
        var port = ManagedPostgres.FreePort();

        var added = await Run("endpoint", "add", "app", "--instance", "blue", "--listen", $"127.0.0.1:{port}");
        var list = await Run("endpoint", "list");
        var missingKind = await Run("endpoint", "add", "other", "--instance", "blue");

        added.ExitCode.ShouldBe(0, added.ToString());
        added.Stdout.Trim().ShouldBe($"endpoint app → blue (127.0.0.1:{port})");
        list.Stdout.ShouldStartWith("NAME  KIND   INSTANCE  ADDRESS");
        list.Stdout.ShouldContain($"app   proxy  blue      127.0.0.1:{port}  0");
        // The certificate Teal generated at first start for TLS clients: its fingerprint in the list, its key 0600.
        using var certificate = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPem(File.ReadAllText(Path.Combine(_teal.DataDirectory, "proxy-tls.crt")));
        list.Stdout.ShouldContain(string.Join(':', certificate.GetCertHash(System.Security.Cryptography.HashAlgorithmName.SHA256).Select(b => b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture))));
        File.GetUnixFileMode(Path.Combine(_teal.DataDirectory, "proxy-tls.key")).ShouldBe(UnixFileMode.UserRead | UnixFileMode.UserWrite);
        missingKind.ExitCode.ShouldBe(2, missingKind.ToString());
        (await Run("endpoint", "remove", "app")).ExitCode.ShouldBe(0);
        (await Run("endpoint", "list", "--output", "json")).Stdout.Trim().ShouldBe("[]");
    }

    private Task<CliRun> Run(params string[] args) =>
        CliRun.RunAsync([.. args, "--server", _teal.Url.ToString(), "--data-dir", _teal.DataDirectory]);
}
