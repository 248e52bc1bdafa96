using System.Net;
using System.Net.Http.Json;
using MySqlConnector;
using Teal.Core.Engines;
using Teal.Core.Instances;
using Teal.Server.Api;
using Teal.Server.Json;
using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Server.Tests.Api;

/// <summary>MariaDB instances through the API: engines listed, managed ones created and reached by their URL, existing ones probed.</summary>
public sealed class MariaDbInstanceApiTests : IAsyncLifetime
{
    private TealHost _teal = null!;

    public async Task InitializeAsync() => _teal = await TealHost.StartAsync();

    public async Task DisposeAsync() => await _teal.DisposeAsync();

    [Fact]
    public async Task CreateManaged_MariaDb1011_UrlIsAMysqlUriThatLogsIn_AndEnginesListIt()
    {
        using var client = _teal.Client();

        var engines = (await client.GetFromJsonAsync<EngineBinaries[]>("/api/engines", TealJson.Options))!;
        using var created = await client.PostAsJsonAsync("/api/instances", new { name = "shop", engine = "mariadb", version = "10.11" });

        engines.ShouldContain(e => e.Engine == EngineKind.MariaDb && e.Version.StartsWith("10.11.", StringComparison.Ordinal));
        created.StatusCode.ShouldBe(HttpStatusCode.Created, await created.Content.ReadAsStringAsync());
        var shop = (await client.GetFromJsonAsync<InstanceView[]>("/api/instances", TealJson.Options))!.ShouldHaveSingleItem();
        (shop.Engine, shop.Managed, shop.User).ShouldBe((EngineKind.MariaDb, true, "teal"));
        shop.Database.ShouldBe("mysql", "a managed instance is registered with its engine's own database, not PostgreSQL's");
        var url = (await client.GetFromJsonAsync<InstanceUrl>("/api/instances/shop/url", TealJson.Options))!.Url;
        url.ShouldStartWith("mysql://teal:");
        var connection = Teal.MySql.Connections.MySqlConnectionStrings.Parse(url);
        (await client.GetStringAsync("/api/instances")).ShouldNotContain(connection.Password!);
        await using (var session = new MySqlConnection($"Server={connection.Host};Port={connection.Port};User ID={connection.User};Password={connection.Password};Pooling=false"))
        {
            await session.OpenAsync();
            await using var check = new MySqlCommand("SELECT @@log_bin, @@binlog_format, @@gtid_strict_mode", session);
            await using var reader = await check.ExecuteReaderAsync();
            await reader.ReadAsync();
            (reader.GetInt64(0), reader.GetString(1), reader.GetInt64(2)).ShouldBe((1L, "ROW", 1L), "a managed server is ready to be blue or green");
        }

        using var removed = await client.DeleteAsync("/api/instances/shop?delete-data=true");
        removed.StatusCode.ShouldBe(HttpStatusCode.NoContent);
        Directory.Exists(shop.Directory).ShouldBeFalse();
    }

    [Fact]
    public async Task Add_ExistingReplica_IsRegisteredAsAReader()
    {
        await using var primary = await MariaDbServer.StartAsync();
        await using var replica = await MariaDbServer.StartAsync();
        await replica.ExecuteAsync($"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.Port}, MASTER_USER='teal', MASTER_PASSWORD='{primary.Password}', MASTER_USE_GTID=slave_pos");
        using var client = _teal.Client();

        using var added = await client.PostAsJsonAsync("/api/instances", new { name = "copy", connection = replica.Uri(), engine = "mariadb" });

        added.StatusCode.ShouldBe(HttpStatusCode.Created, await added.Content.ReadAsStringAsync());
        var copy = (await client.GetFromJsonAsync<InstanceView[]>("/api/instances", TealJson.Options))!.ShouldHaveSingleItem();
        (copy.Engine, copy.Role, copy.Managed).ShouldBe((EngineKind.MariaDb, InstanceRole.Reader, false));
        copy.Version.ShouldStartWith("10.11.");
    }

    [Theory]
    [InlineData("mariadb", "SHOW VARIABLES", "pg_settings")]
    [InlineData("postgres", "pg_settings", "SHOW VARIABLES")]
    public async Task Create_SettingNameRefused_HintSpeaksOfThatEnginesSettings(string engine, string named, string notNamed)
    {
        using var client = _teal.Client();

        using var refused = await client.PostAsJsonAsync("/api/instances", new { name = "shop", engine, version = "10.11", parameters = new Dictionary<string, string> { ["max connections"] = "10" } });

        refused.StatusCode.ShouldBe(HttpStatusCode.BadRequest, await refused.Content.ReadAsStringAsync());
        var problem = (await refused.Content.ReadFromJsonAsync<ApiProblem>(TealJson.Options))!;
        problem.Code.ShouldBe("parameter.invalid-name");
        problem.Hint!.ShouldContain(named);
        problem.Hint!.ShouldNotContain(notNamed);
        (await client.GetFromJsonAsync<InstanceView[]>("/api/instances", TealJson.Options))!.ShouldBeEmpty();
    }
}
