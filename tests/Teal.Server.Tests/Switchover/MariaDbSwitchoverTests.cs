using System.Collections.Concurrent;
using System.Net.Http.Json;
using System.Text.Json;
using MySqlConnector;
using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Server.Tests.Switchover;

/// <summary>
/// A MariaDB deployment from create to switchover through the real API, the same SwitchoverPlan
/// and executor as PostgreSQL, with no endpoint: a writer on blue the whole time, and afterwards
/// every acknowledged write on green, old blue refusing writes (SUPER included), green writable.
/// </summary>
public sealed class MariaDbSwitchoverTests
{
    [Fact]
    public async Task CreateThenSwitchover_NoAcknowledgedWriteLost_OldBlueRefusesWrites_GreenTakesOver()
    {
        await using var blue = await MariaDbServer.StartAsync();
        await blue.ExecuteAsync(
            """
            CREATE DATABASE app;
            CREATE TABLE app.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB;
            INSERT INTO app.t (v) SELECT seq FROM app.seq_1_to_2000;
            CREATE USER app@'%' IDENTIFIED BY 'app-pw'; GRANT SELECT, INSERT ON app.* TO app@'%';
            CREATE USER admin@'%' IDENTIFIED BY 'admin-pw'; GRANT ALL PRIVILEGES ON *.* TO admin@'%';
            """);
        await using var host = await TealHost.StartAsync();
        using var client = host.Client();

        (await client.PostAsJsonAsync("/api/instances", new { name = "shop", connection = blue.Uri("app"), engine = "mariadb" })).EnsureSuccessStatusCode();
        var created = await client.PostAsJsonAsync("/api/deployments", new { name = "upgrade", source = "shop", copyRoles = true });
        created.IsSuccessStatusCode.ShouldBeTrue(await created.Content.ReadAsStringAsync());
        var available = await WaitForStatusAsync(client, "AVAILABLE", TimeSpan.FromSeconds(240));
        available.GetProperty("status").GetString().ShouldBe("AVAILABLE", available.ToString());
        // The deployment speaks of its own engine, not of PostgreSQL.
        available.GetProperty("tasks")[0].GetProperty("message").GetString().ShouldStartWith("managed MariaDB 10.11");

        var acknowledged = new ConcurrentBag<long>();
        using var stop = new CancellationTokenSource();
        var writer = Task.Run(() => WriteAsync(blue, acknowledged, stop.Token));
        await Task.Delay(500);
        var started = await client.PostAsJsonAsync("/api/deployments/upgrade/switchover", new { switchoverTimeout = 60 });
        started.IsSuccessStatusCode.ShouldBeTrue(await started.Content.ReadAsStringAsync());
        var done = await WaitForStatusAsync(client, "SWITCHOVER_COMPLETED", TimeSpan.FromSeconds(120));
        await stop.CancelAsync();
        await writer;
        done.GetProperty("status").GetString().ShouldBe("SWITCHOVER_COMPLETED", done.ToString());

        // Green now carries blue's name; its URL (with the generated password) reaches it.
        var url = (await client.GetFromJsonAsync<JsonElement>("/api/instances/shop/url")).GetProperty("url").GetString()!;
        var green = Teal.MySql.Connections.MySqlConnectionStrings.Parse(url);
        green.Port.ShouldNotBe(blue.Port);
        await using var greenAdmin = new MySqlConnection($"Server={green.Host};Port={green.Port};User ID={green.User};Password={green.Password};Pooling=false");
        await greenAdmin.OpenAsync();
        var onGreen = new HashSet<long>();
        await using (var read = new MySqlCommand("SELECT id FROM app.t", greenAdmin))
        await using (var reader = await read.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                onGreen.Add(reader.GetInt64(0));
            }
        }

        acknowledged.Count.ShouldBeGreaterThan(0, "the writer wrote before the fence");
        acknowledged.Where(id => !onGreen.Contains(id)).ShouldBeEmpty("every acknowledged write is on green");

        // Old blue refuses writes from everyone but Teal: the plain account by read_only, SUPER by its lock.
        await using (var app = await blue.OpenAsync(user: "app", password: "app-pw"))
        {
            var refused = await Should.ThrowAsync<MySqlException>(async () =>
            {
                await using var insert = new MySqlCommand("INSERT INTO app.t (v) VALUES (-1)", app);
                await insert.ExecuteNonQueryAsync();
            });
            refused.Number.ShouldBe(1290);
        }

        (await Should.ThrowAsync<MySqlException>(() => blue.OpenAsync(user: "admin", password: "admin-pw"))).Number.ShouldBe(4151);

        // Green takes writes from the application's account (copied with its password), above blue's ids.
        await using (var app = new MySqlConnection($"Server={green.Host};Port={green.Port};User ID=app;Password=app-pw;Pooling=false"))
        {
            await app.OpenAsync();
            await using var insert = new MySqlCommand("INSERT INTO app.t (v) VALUES (-2); SELECT LAST_INSERT_ID()", app);
            var id = Convert.ToInt64(await insert.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture);
            id.ShouldBeGreaterThan(await blue.ScalarAsync<long>("SELECT MAX(id) FROM app.t"));
        }

        await using (var replicas = new MySqlCommand("SHOW ALL SLAVES STATUS", greenAdmin))
        await using (var reader = await replicas.ExecuteReaderAsync())
        {
            (await reader.ReadAsync()).ShouldBeFalse("green replicates from nothing after the switchover");
        }

        var events = await client.GetFromJsonAsync<JsonElement[]>("/api/events?deployment=upgrade&limit=5000");
        var positions = events!.Single(e => e.GetProperty("kind").GetString() == "positions");
        var data = positions.GetProperty("data");
        data.GetProperty("green.file").GetString().ShouldStartWith("binlog.");
        data.GetProperty("green.position").GetString().ShouldNotBeNullOrEmpty();
        data.GetProperty("green.gtid").GetString().ShouldNotBeNullOrEmpty();
        positions.GetProperty("message").GetString()!.ShouldContain("binary log coordinates in green after switchover");
    }

    /// <summary>Inserts one row per statement through a plain account; an id counts once the server acknowledged it.</summary>
    private static async Task WriteAsync(MariaDbServer blue, ConcurrentBag<long> acknowledged, CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                await using var app = await blue.OpenAsync(user: "app", password: "app-pw", cancellationToken: CancellationToken.None);
                while (!cancellationToken.IsCancellationRequested)
                {
                    await using var insert = new MySqlCommand("INSERT INTO app.t (v) VALUES (1); SELECT LAST_INSERT_ID()", app);
                    acknowledged.Add(Convert.ToInt64(await insert.ExecuteScalarAsync(CancellationToken.None), System.Globalization.CultureInfo.InvariantCulture));
                }
            }
            catch (MySqlException)
            {
                // Fenced (read_only) or killed by the drain: not acknowledged, try again.
                await Task.Delay(50, CancellationToken.None);
            }
        }
    }

    private static async Task<JsonElement> WaitForStatusAsync(HttpClient client, string status, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var deployment = await client.GetFromJsonAsync<JsonElement>("/api/deployments/upgrade");
            var current = deployment.GetProperty("status").GetString();
            if (current == status || current is "INVALID_CONFIGURATION" or "SWITCHOVER_FAILED" || DateTime.UtcNow > deadline)
            {
                return deployment;
            }

            await Task.Delay(250);
        }
    }
}
