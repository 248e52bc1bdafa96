using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Teal.Core.Engines;
using Teal.Postgres.Instances;
using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Cli.Tests;

/// <summary>
/// Green's topology with real servers: <c>--target-readers</c> makes streaming readers of a
/// PostgreSQL 17 green (no client tool of 17 exists here), a reader endpoint serves blue, splits
/// new connections by the canary weight, is held back by the readers guardrail and moves to
/// green's readers at the switchover; a delete removes green's readers.
/// </summary>
public sealed class ReaderTopologyTests : IAsyncLifetime
{
    private const string ReaderRole = "app_reader";
    private const string ReaderPassword = "Reader-Pa55-zq";

    private TealHost _teal = null!; // Set in InitializeAsync, before any test runs.
    private PostgresServer _blue = null!; // Set in InitializeAsync.

    public async Task InitializeAsync()
    {
        _blue = await PostgresServer.StartAsync("15");
        _teal = await TealHost.StartAsync();
        await _blue.ExecuteAsync("CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g");
        // An application's read-only login; Teal copies it (and its password) to green.
        await _blue.ExecuteAsync($"CREATE ROLE {ReaderRole} LOGIN PASSWORD '{ReaderPassword}'; GRANT SELECT ON items TO {ReaderRole}");
        (await Run("instance", "add", "app", "--connection", _blue.Uri())).ExitCode.ShouldBe(0);
    }

    public async Task DisposeAsync()
    {
        // TealHost removes every managed instance it knows (green and its readers included).
        await _teal.DisposeAsync();
        await _blue.DisposeAsync();
    }

    [Fact]
    public async Task Readers_StreamFromGreen_CanarySplits_GuardrailRefusesStoppedReader_EndpointMovesAtSwitchover()
    {
        var endpointPort = ManagedPostgres.FreePort();
        (await Run("endpoint", "add", "reads", "--instance", "app", "--listen", $"127.0.0.1:{endpointPort}", "--reader")).ExitCode.ShouldBe(0);

        var created = await Run("create", "topo", "--source", "app", "--target-engine-version", "17", "--target-readers", "2", "--wait");

        created.ExitCode.ShouldBe(0, created.ToString());
        var deployment = await ShowAsync();
        var green = deployment.GetProperty("green").GetString()!;
        var readers = deployment.GetProperty("readers").EnumerateArray().Select(r => r.GetProperty("name").GetString()!).ToList();
        readers.ShouldBe([$"{green}-r1", $"{green}-r2"]);
        var reader1 = (await _teal.State.GetInstanceAsync($"{green}-r1", default))!;
        reader1.ReaderOf.ShouldBe(green);
        reader1.Version.ShouldStartWith("17");

        // A row written on blue is applied on green by replication, and streamed on to the reader.
        await _blue.ExecuteAsync("INSERT INTO items VALUES (1001, 'written after create')");
        await WaitUntilAsync(async () => await ReaderScalarAsync<long>(reader1.Name, "SELECT count(*) FROM items WHERE id = 1001") == 1, "the row reaches green's reader");
        (await ReaderScalarAsync<bool>(reader1.Name, "SELECT pg_is_in_recovery()")).ShouldBeTrue();
        (await ShowTextAsync()).ShouldContain($"reader       {reader1.Name} 127.0.0.1:{reader1.Port} streaming");

        // Before the switchover the reader endpoint serves blue (Teal made no reader of blue).
        (await PortThroughEndpointAsync(endpointPort)).ShouldBe(_blue.Port);

        // Canary: out of range is refused by the CLI and the API, 50% splits new connections.
        var tooMuch = await Run("endpoint", "canary", "reads", "--green-percent", "150");
        tooMuch.ExitCode.ShouldBe(2, tooMuch.ToString());
        tooMuch.Stderr.ShouldContain("--green-percent must be between 0 and 100, not 150");
        using (var client = _teal.Client())
        {
            var refused = await client.PostAsJsonAsync("/api/endpoints/reads/canary", new { greenPercent = -1 });
            ((int)refused.StatusCode).ShouldBe(400);
            (await refused.Content.ReadAsStringAsync()).ShouldContain("must be between 0 and 100, not -1");
        }

        (await Run("endpoint", "canary", "reads", "--green-percent", "50")).ExitCode.ShouldBe(0);
        var ports = new List<int?>();
        for (var i = 0; i < 200; i++)
        {
            ports.Add(await PortThroughEndpointAsync(endpointPort));
        }

        // Green is fenced until the switchover, and its readers with it (a physical copy of its
        // catalogs): a client role that reaches green's reader is refused there by the fence.
        var toGreen = ports.Count(p => p is null);
        ports.Count(p => p == _blue.Port).ShouldBe(200 - toGreen);
        toGreen.ShouldBeInRange(60, 140, $"{toGreen} of 200 new connections went to green's reader at 50%");
        (await Run("endpoint", "list")).Stdout.ShouldContain($"app (reader, 50% to {reader1.Name})");

        // Guardrail: a stopped reader refuses the switchover, naming it and the fix.
        var provisioner = _teal.Services.GetRequiredService<EngineRegistry>().Provisioner(reader1.Engine);
        var reader2 = (await _teal.State.GetInstanceAsync($"{green}-r2", default))!;
        await provisioner.StopAsync(reader2, default);
        var refusedSwitchover = await Run("switchover", "topo");
        refusedSwitchover.ExitCode.ShouldBe(1, refusedSwitchover.ToString());
        refusedSwitchover.Stderr.ShouldContain($"{reader2.Name} is not streaming (not connected)");
        refusedSwitchover.Stderr.ShouldContain($"start {reader2.Name} again");
        (await ShowAsync()).GetProperty("status").GetString().ShouldBe("AVAILABLE");
        await provisioner.StartAsync(reader2, default);
        await WaitUntilAsync(async () => (await Run("check", "topo")).ExitCode == 0, "reader 2 streams again");

        var switched = await Run("switchover", "topo", "--wait");

        switched.ExitCode.ShouldBe(0, switched.ToString());
        // Green's readers took production's name as their stem and follow it.
        var moved = (await _teal.State.GetInstanceAsync("app-r1", default))!;
        moved.Port.ShouldBe(reader1.Port);
        moved.ReaderOf.ShouldBe("app");
        (await _teal.State.GetInstanceAsync(reader1.Name, default)).ShouldBeNull();
        // The reader endpoint now routes to green's reader, where the application's login reads
        // once the reader has replayed green's unfence; the canary is over.
        await WaitUntilAsync(async () => await PortThroughEndpointAsync(endpointPort) == reader1.Port, "the application's login reads on green's reader through the endpoint");
        (await _teal.State.GetEndpointAsync("reads", default))!.CanaryInstance.ShouldBeNull();
        using var json = JsonDocument.Parse((await Run("instance", "list", "--output", "json")).Stdout);
        json.RootElement.EnumerateArray().Where(i => i.GetProperty("readerOf").GetString() == "app").Select(i => i.GetProperty("name").GetString()).Order().ShouldBe(["app-r1", "app-r2"]);
    }

    [Fact]
    public async Task Delete_BeforeSwitchover_RemovesGreensReaders()
    {
        var created = await Run("create", "gone", "--source", "app", "--target-readers", "1", "--wait");
        created.ExitCode.ShouldBe(0, created.ToString());
        var green = (await ShowAsync("gone")).GetProperty("green").GetString()!;
        var reader = (await _teal.State.GetInstanceAsync($"{green}-r1", default))!;
        Directory.Exists(reader.Managed!.Directory).ShouldBeTrue();

        var deleted = await Run("delete", "gone", "--delete-target");

        deleted.ExitCode.ShouldBe(0, deleted.ToString());
        (await _teal.State.GetInstanceAsync(reader.Name, default)).ShouldBeNull();
        Directory.Exists(reader.Managed.Directory).ShouldBeFalse();
        (await Run("events", "--output", "json")).Stdout.ShouldContain($"readers removed: {reader.Name}");
    }

    [Fact]
    public async Task TargetReadersOutOfRange_RefusedWithClearError()
    {
        var run = await Run("create", "many", "--source", "app", "--target-readers", "9");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldBe("error: --target-readers must be between 0 and 8, not 9");
        (await Run("list", "--output", "json")).Stdout.Trim().ShouldBe("[]");
    }

    /// <summary>
    /// The server port behind a new connection through the endpoint as the application's reader
    /// login; null when the server refused that login because its role cannot log in (a fenced
    /// side: green's readers before the switchover).
    /// </summary>
    private static async Task<int?> PortThroughEndpointAsync(int endpointPort)
    {
        var builder = new NpgsqlConnectionStringBuilder { Host = "127.0.0.1", Port = endpointPort, Username = ReaderRole, Password = ReaderPassword, Database = "postgres", Pooling = false };
        await using var conn = new NpgsqlConnection(builder.ConnectionString);
        try
        {
            await conn.OpenAsync();
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.InvalidAuthorizationSpecification && ex.MessageText.Contains("not permitted to log in", StringComparison.Ordinal))
        {
            return null;
        }

        await using var command = new NpgsqlCommand("SELECT current_setting('port')::int FROM items LIMIT 1", conn);
        return (int)(await command.ExecuteScalarAsync())!;
    }

    private async Task<T> ReaderScalarAsync<T>(string reader, string sql)
    {
        var url = (await Run("instance", "url", reader, "--as-teal")).Stdout.Trim();
        await using var conn = new NpgsqlConnection(Teal.Postgres.Connections.PostgresConnections.Builder(Teal.Postgres.Connections.ConnectionStrings.Parse(url), pooling: false).ConnectionString);
        await conn.OpenAsync();
        await using var command = new NpgsqlCommand(sql, conn);
        return (T)(await command.ExecuteScalarAsync())!;
    }

    private async Task<JsonElement> ShowAsync(string name = "topo")
    {
        var run = await Run("show", name, "--output", "json");
        run.ExitCode.ShouldBe(0, run.ToString());
        return JsonDocument.Parse(run.Stdout).RootElement.Clone();
    }

    private async Task<string> ShowTextAsync() => (await Run("show", "topo")).Stdout;

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                if (await condition())
                {
                    return;
                }
            }
            catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException)
            {
                // Not yet: a reader starting up refuses connections for a moment.
            }

            await Task.Delay(500);
        }

        throw new TimeoutException($"timed out waiting until {what}");
    }

    private Task<CliRun> Run(params string[] args) =>
        CliRun.RunAsync([.. args, "--server", _teal.Url.ToString(), "--data-dir", _teal.DataDirectory]);
}

