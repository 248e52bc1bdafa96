using System.Net;
using System.Net.Http.Json;
using Teal.Core.Instances;
using Teal.Server.Api;
using Teal.Server.Json;
using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Server.Tests.Api;

/// <summary>Registering and creating instances against real PostgreSQL servers.</summary>
public sealed class InstanceApiTests(Postgres15Fixture postgres) : IClassFixture<Postgres15Fixture>, IAsyncLifetime
{
    private TealHost _teal = null!; // Set in InitializeAsync, before any test runs.

    public async Task InitializeAsync() => _teal = await TealHost.StartAsync();

    public async Task DisposeAsync() => await _teal.DisposeAsync();

    [Fact]
    public async Task Add_WrongPassword_IsRefusedWithoutEchoingItAndStoresNothing()
    {
        using var client = _teal.Client();
        const string password = "Wr0ng-Pa55word-xyzzy";

        using var response = await client.PostAsJsonAsync("/api/instances", new { name = "blue", connection = postgres.Server.Uri().Replace(postgres.Server.Password, password, StringComparison.Ordinal) });

        response.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        var body = await response.Content.ReadAsStringAsync();
        body.ShouldContain("connection.authentication-failed");
        body.ShouldNotContain(password);
        (await _teal.State.ListInstancesAsync(default)).ShouldBeEmpty();
        File.Exists(Path.Combine(_teal.DataDirectory, "secrets.json")).ShouldBeFalse();
    }

    [Fact]
    public async Task Add_Existing_ListShowsItWithoutPasswordAndUrlHasIt()
    {
        using var client = _teal.Client();

        using var added = await client.PostAsJsonAsync("/api/instances", new { name = "blue", connection = postgres.Server.Uri() });

        added.StatusCode.ShouldBe(HttpStatusCode.Created);
        var list = await client.GetStringAsync("/api/instances");
        list.ShouldNotContain(postgres.Server.Password);
        var instances = (await client.GetFromJsonAsync<InstanceView[]>("/api/instances", TealJson.Options))!;
        var blue = instances.ShouldHaveSingleItem();
        blue.Port.ShouldBe(postgres.Server.Port);
        blue.Version.ShouldStartWith("15.");
        blue.Managed.ShouldBeFalse();
        var url = (await client.GetFromJsonAsync<InstanceUrl>("/api/instances/blue/url", TealJson.Options))!;
        url.Url.ShouldBe(postgres.Server.Uri());
        (await File.ReadAllTextAsync(Path.Combine(_teal.DataDirectory, "secrets.json"))).ShouldContain(postgres.Server.Password);

        using var again = await client.PostAsJsonAsync("/api/instances", new { name = "blue", connection = postgres.Server.Uri() });
        again.StatusCode.ShouldBe(HttpStatusCode.Conflict);

        using var removed = await client.DeleteAsync("/api/instances/blue");
        removed.StatusCode.ShouldBe(HttpStatusCode.NoContent);
        (await _teal.State.ListInstancesAsync(default)).ShouldBeEmpty();
        (await File.ReadAllTextAsync(Path.Combine(_teal.DataDirectory, "secrets.json"))).ShouldNotContain(postgres.Server.Password);
    }

    [Fact]
    public async Task CreateManaged_Postgres15_ListShowsItAndOnlyUrlHasThePassword()
    {
        using var client = _teal.Client();

        using var created = await client.PostAsJsonAsync("/api/instances", new { name = "blue", engine = "postgres", version = "15", parameters = new Dictionary<string, string> { ["fsync"] = "off" } });

        created.StatusCode.ShouldBe(HttpStatusCode.Created);
        var blue = (await client.GetFromJsonAsync<InstanceView[]>("/api/instances", TealJson.Options))!.ShouldHaveSingleItem();
        blue.Managed.ShouldBeTrue();
        blue.Version.ShouldStartWith("15.");
        blue.Directory.ShouldBe(Path.Combine(_teal.DataDirectory, "instances", "blue"));
        var url = (await client.GetFromJsonAsync<InstanceUrl>("/api/instances/blue/url", TealJson.Options))!.Url;
        var password = new Uri(url).UserInfo.Split(':')[1];
        password.Length.ShouldBeGreaterThan(20);
        (await client.GetStringAsync("/api/instances")).ShouldNotContain(password);
        (await client.GetStringAsync("/api/events")).ShouldNotContain(password);
        (await File.ReadAllTextAsync(Path.Combine(_teal.DataDirectory, "teal.db"))).ShouldNotContain(password);
        await using (var connection = new Npgsql.NpgsqlConnection($"Host={blue.Host};Port={blue.Port};Username={blue.User};Password={password};Database=postgres;Pooling=false"))
        {
            await connection.OpenAsync();
        }

        using var refused = await client.DeleteAsync("/api/instances/blue");
        refused.StatusCode.ShouldBe(HttpStatusCode.UnprocessableEntity);
        (await refused.Content.ReadAsStringAsync()).ShouldContain("--delete-data");

        using var removed = await client.DeleteAsync("/api/instances/blue?delete-data=true");
        removed.StatusCode.ShouldBe(HttpStatusCode.NoContent);
        Directory.Exists(blue.Directory).ShouldBeFalse();
    }

    [Fact]
    public async Task CreateManaged_UnknownVersion_IsRefusedAndLeavesNothing()
    {
        using var client = _teal.Client();

        using var response = await client.PostAsJsonAsync("/api/instances", new { name = "blue", version = "99" });

        response.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        (await response.Content.ReadAsStringAsync()).ShouldContain("engine.unknown-version");
        (await _teal.State.ListInstancesAsync(default)).ShouldBeEmpty();
        Directory.EnumerateFileSystemEntries(Path.Combine(_teal.DataDirectory, "instances")).ShouldBeEmpty();
    }

    [Fact]
    public async Task Endpoint_AddedWithInstance_ServesConnectionsAndBlocksInstanceRemoval()
    {
        using var client = _teal.Client();
        var port = Teal.Postgres.Instances.ManagedPostgres.FreePort();
        using var added = await client.PostAsJsonAsync("/api/instances", new { name = "blue", connection = postgres.Server.Uri(), endpoint = $"127.0.0.1:{port}" });
        added.StatusCode.ShouldBe(HttpStatusCode.Created);

        var url = (await client.GetFromJsonAsync<InstanceUrl>("/api/instances/blue/url?endpoint=true", TealJson.Options))!.Url;
        url.ShouldContain($"@127.0.0.1:{port}/");
        await using (var connection = new Npgsql.NpgsqlConnection($"Host=127.0.0.1;Port={port};Username={postgres.Server.User};Password={postgres.Server.Password};Database=postgres;Pooling=false"))
        {
            await connection.OpenAsync();
            await using var command = new Npgsql.NpgsqlCommand("SELECT 1", connection);
            (await command.ExecuteScalarAsync()).ShouldBe(1);
        }

        var endpoint = (await client.GetFromJsonAsync<EndpointView[]>("/api/endpoints", TealJson.Options))!.ShouldHaveSingleItem();
        endpoint.Name.ShouldBe("blue");
        endpoint.Instance.ShouldBe("blue");
        endpoint.Listen.ShouldBe($"127.0.0.1:{port}");
        endpoint.Stats.ShouldNotBeNull().Total.ShouldBeGreaterThanOrEqualTo(1);

        using var sameAddress = await client.PostAsJsonAsync("/api/endpoints", new { name = "other", instance = "blue", listen = $"127.0.0.1:{port}" });
        sameAddress.StatusCode.ShouldBe(HttpStatusCode.Conflict);
        using var inUse = await client.DeleteAsync("/api/instances/blue");
        inUse.StatusCode.ShouldBe(HttpStatusCode.Conflict);

        (await client.DeleteAsync("/api/endpoints/blue")).StatusCode.ShouldBe(HttpStatusCode.NoContent);
        (await client.DeleteAsync("/api/instances/blue")).StatusCode.ShouldBe(HttpStatusCode.NoContent);
    }

    [Fact]
    public async Task Endpoint_ServerTls_BadSettingsRefusedAndNothingKept_RequireRefusesAServerWithoutTls()
    {
        using var client = _teal.Client();
        (await client.PostAsJsonAsync("/api/instances", new { name = "blue", connection = postgres.Server.Uri() })).StatusCode.ShouldBe(HttpStatusCode.Created);
        var port = Teal.Postgres.Instances.ManagedPostgres.FreePort();
        var roots = Path.Combine(_teal.DataDirectory, "roots.pem");
        await File.WriteAllTextAsync(roots, "not used");

        using var missingRoots = await client.PostAsJsonAsync("/api/endpoints", new { name = "app", instance = "blue", listen = $"127.0.0.1:{port}", serverTls = "verify-full", serverTlsRootFile = "/nonexistent/roots.pem" });
        using var rootsWithoutVerify = await client.PostAsJsonAsync("/api/endpoints", new { name = "app", instance = "blue", listen = $"127.0.0.1:{port}", serverTls = "require", serverTlsRootFile = roots });
        using var unknownMode = await client.PostAsJsonAsync("/api/endpoints", new { name = "app", instance = "blue", listen = $"127.0.0.1:{port}", serverTls = "always" });

        missingRoots.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        (await missingRoots.Content.ReadAsStringAsync()).ShouldContain("/nonexistent/roots.pem does not exist");
        rootsWithoutVerify.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        (await rootsWithoutVerify.Content.ReadAsStringAsync()).ShouldContain("verify-full");
        unknownMode.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        (await _teal.State.ListEndpointsAsync(default)).ShouldBeEmpty();

        using var added = await client.PostAsJsonAsync("/api/endpoints", new { name = "app", instance = "blue", listen = $"127.0.0.1:{port}", serverTls = "require" });
        added.StatusCode.ShouldBe(HttpStatusCode.Created);
        (await client.GetFromJsonAsync<EndpointView[]>("/api/endpoints", TealJson.Options))!.ShouldHaveSingleItem().ServerTls.ShouldBe(Teal.Core.Endpoints.ServerTlsMode.Require);

        // The test server has ssl = off: require refuses it, and says why.
        await using var connection = new Npgsql.NpgsqlConnection($"Host=127.0.0.1;Port={port};Username={postgres.Server.User};Password={postgres.Server.Password};Database=postgres;Pooling=false");
        var error = await Should.ThrowAsync<Npgsql.PostgresException>(connection.OpenAsync());
        error.MessageText.ShouldContain("does not accept TLS");
        (await client.DeleteAsync("/api/endpoints/app")).StatusCode.ShouldBe(HttpStatusCode.NoContent);
    }

    [Fact]
    public async Task Endpoint_AddressTaken_RefusedAndInstanceNotKept()
    {
        using var client = _teal.Client();
        using var holder = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        holder.Start();
        var port = ((System.Net.IPEndPoint)holder.LocalEndpoint).Port;

        using var added = await client.PostAsJsonAsync("/api/instances", new { name = "blue", connection = postgres.Server.Uri(), endpoint = $"127.0.0.1:{port}" });

        added.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        (await added.Content.ReadAsStringAsync()).ShouldContain("endpoint.listen-failed");
        (await _teal.State.ListInstancesAsync(default)).ShouldBeEmpty();
        (await _teal.State.ListEndpointsAsync(default)).ShouldBeEmpty();
    }
}
