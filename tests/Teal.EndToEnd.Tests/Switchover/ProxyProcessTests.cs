using System.Net.Http.Json;
using System.Text.Json;
using System.Text.RegularExpressions;
using Npgsql;
using Teal.Postgres.Instances;
using Teal.Testing;
using Teal.Testing.Load;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// The data path apart from the control plane: <c>teal serve --endpoints external</c> with real
/// <c>teal proxy</c> processes in front of PostgreSQL. The control plane is killed with
/// <c>kill -9</c> under load and no client notices; a switchover drives two proxies, and rolls
/// back while one of them does not answer; a proxy is replaced under an established session.
/// </summary>
public sealed partial class ProxyProcessTests
{
    private static readonly string[] External = ["--endpoints", "external"];

    [Fact]
    public async Task KillNineOfServe_UnderProbeLoadThroughTealProxy_NoClientErrorAndNewConnectionsAccepted()
    {
        await using var scenario = await BlueGreenScenario.StartAsync(serveArguments: External);
        await using var proxy = await TealProxyProcess.StartAsync(scenario.Teal, "p1");
        await WaitForEndpointAsync(scenario.EndpointConnectionString);
        // teal serve itself binds no endpoint in external mode: the one listener is the proxy's.
        scenario.Teal.Log.ShouldNotContain("Endpoint app listens on");

        await using var probe = new ProbeWriter(scenario.EndpointConnectionString);
        probe.Start();
        await WaitForAcksAsync(probe, 50);

        await scenario.Teal.KillAsync();
        var ackedAtKill = probe.Acknowledged.Count;
        (await ListensAsync(scenario.Teal.Port)).ShouldBeFalse("teal serve is down");

        // While the control plane is down: new connections are accepted and routed (the SCRAM
        // login goes to the server, which checks the password), and the probe keeps writing.
        for (var i = 0; i < 5; i++)
        {
            (await BlueGreenScenario.ScalarAsync<int>(Fresh(scenario.EndpointConnectionString), "SELECT 1")).ShouldBe(1);
        }

        await Task.Delay(TimeSpan.FromSeconds(2));
        var ackedWhileDown = probe.Acknowledged.Count;
        ackedWhileDown.ShouldBeGreaterThan(ackedAtKill + 20, "the probe keeps writing through the proxy while teal serve is down");

        await scenario.Teal.StartAgainAsync();
        await proxy.WaitForLogAsync(ControlPlaneAnswers(), TimeSpan.FromSeconds(30));
        await Task.Delay(TimeSpan.FromSeconds(1));
        await probe.StopAsync();

        probe.Errors.ShouldBeEmpty("no client connection through teal proxy closes when teal serve dies");
        probe.Acknowledged.Count.ShouldBeGreaterThan(ackedWhileDown);
        // Outside a switchover the write gap stays that of a loaded machine, nowhere near the
        // seconds a restart of an in-process endpoint costs.
        probe.LongestGap.ShouldBeLessThan(TimeSpan.FromSeconds(2));
        var acked = probe.Acknowledged;
        await using (var connection = new NpgsqlConnection(scenario.Blue.ConnectionString(BlueGreenScenario.Database)))
        {
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand($"SELECT count(*) FROM {ProbeWriter.Table} WHERE n = ANY($1)", connection) { Parameters = { new() { Value = acked.ToArray() } } };
            ((long)(await command.ExecuteScalarAsync())!).ShouldBe(acked.Count);
        }
    }

    [Fact]
    public async Task TealProxy_ReaderEndpoint_SpreadsOverEveryReader_AndDropsOneThatStopsStreaming()
    {
        await using var scenario = await BlueGreenScenario.StartAsync(serveArguments: External);
        var readsPort = ManagedPostgres.FreePort();
        (await scenario.Cli.RunAsync("endpoint", "add", "reads", "--instance", "app", "--listen", $"127.0.0.1:{readsPort}", "--reader")).ShouldSucceed();
        await using var proxy = await TealProxyProcess.StartAsync(scenario.Teal, "p1");
        var reads = new NpgsqlConnectionStringBuilder(scenario.EndpointConnectionString) { Port = readsPort, Pooling = false }.ConnectionString;
        await WaitForEndpointAsync(reads);
        var created = await scenario.Cli.RunAsync(["create", "upgrade", "--source", "app", "--target-readers", "2", "--wait"], TimeSpan.FromMinutes(5));
        created.ShouldSucceed();

        // Before the switchover, the canary's share (all of it here) takes green's readers in turn
        // through the proxy too: its route table carries every streaming reader of green.
        using (var staged = JsonDocument.Parse((await scenario.Cli.RunAsync("instance", "list", "--output", "json")).Stdout))
        {
            var greenReaders = staged.RootElement.EnumerateArray().Where(i => i.TryGetProperty("readerOf", out var of) && of.GetString() is { } writer && writer != "app")
                .Select(i => i.GetProperty("port").GetInt32()).Order().ToList();
            greenReaders.Count.ShouldBe(2);
            (await scenario.Cli.RunAsync("endpoint", "canary", "reads", "--green-percent", "100")).ShouldSucceed();
            await WaitUntilAsync(async () => (await PortsAsync(4)).Order().SequenceEqual([greenReaders[0], greenReaders[0], greenReaders[1], greenReaders[1]]), "the teal proxy sends canary reads to both of green's readers");
        }

        (await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(3))).ShouldSucceed();

        using var instances = JsonDocument.Parse((await scenario.Cli.RunAsync("instance", "list", "--output", "json")).Stdout);
        var readers = instances.RootElement.EnumerateArray().Where(i => i.GetProperty("name").GetString() is "app-r1" or "app-r2")
            .OrderBy(i => i.GetProperty("name").GetString(), StringComparer.Ordinal)
            .Select(i => (Port: i.GetProperty("port").GetInt32(), Directory: i.GetProperty("directory").GetString()!)).ToList();
        readers.Count.ShouldBe(2);
        async Task<List<int>> PortsAsync(int count)
        {
            var ports = new List<int>();
            for (var i = 0; i < count; i++)
            {
                ports.Add(await BlueGreenScenario.ScalarAsync<int>(reads, "SELECT current_setting('port')::int"));
            }

            return ports;
        }

        // The proxy spreads over both readers (the flip and its route table carry the list).
        await WaitUntilAsync(async () => (await PortsAsync(4)).Distinct().Count() == 2, "the teal proxy spreads reads over both readers");
        var both = await PortsAsync(10);
        both.Count(p => p == readers[0].Port).ShouldBe(5, string.Join(",", both));
        both.Count(p => p == readers[1].Port).ShouldBe(5, string.Join(",", both));

        // A reader that stops streaming leaves the proxy's route at its next heartbeat.
        var second = await ManagedPostgres.LoadAsync(readers[1].Directory, default);
        await TestDirectories.Managed.StopAsync(second, immediate: false, default);
        await WaitUntilAsync(async () => (await PortsAsync(4)).All(p => p == readers[0].Port), "the teal proxy leaves the stopped reader");
        (await PortsAsync(6)).ShouldAllBe(p => p == readers[0].Port);
        await TestDirectories.Managed.StartAsync(second, default);
        await WaitUntilAsync(async () => (await PortsAsync(4)).Contains(readers[1].Port), "the teal proxy takes the reader back once it streams");
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow.AddSeconds(90);
        while (true)
        {
            try
            {
                if (await condition())
                {
                    return;
                }
            }
            catch (NpgsqlException) when (DateTime.UtcNow < deadline)
            {
                // A connection sent to the stopped reader before the route changed.
            }

            DateTime.UtcNow.ShouldBeLessThan(deadline, $"{what} within 90 s");
            await Task.Delay(250);
        }
    }

    [Fact]
    public async Task TealProxy_RestartedWhileServeIsDown_ServesWithItsLastRoutes()
    {
        await using var scenario = await BlueGreenScenario.StartAsync(serveArguments: External);
        await using var proxy = await TealProxyProcess.StartAsync(scenario.Teal, "p1");
        await WaitForEndpointAsync(scenario.EndpointConnectionString);

        await scenario.Teal.KillAsync();
        await proxy.KillAsync();
        await proxy.StartAgainAsync();

        // No control plane to ask: the route file it wrote earlier is all it has.
        await proxy.WaitForLogAsync(ServingFromFile(), TimeSpan.FromSeconds(30));
        (await BlueGreenScenario.ScalarAsync<string>(Fresh(scenario.EndpointConnectionString), "SHOW server_version")).ShouldStartWith("15.");
        var routes = Directory.EnumerateFiles(Path.GetDirectoryName(Regex.Match(proxy.Log, @"routes in (\S+)").Groups[1].Value)!, "*.routes.json").Single();
        var text = await File.ReadAllTextAsync(routes);
        text.ShouldNotContain(BlueGreenScenario.AppPassword);
        text.ShouldNotContain(scenario.Blue.Password);
        text.ShouldNotContain(scenario.Teal.Token);
        File.GetUnixFileMode(routes).ShouldBe(UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }

    [Fact]
    public async Task Switchover_ThroughTwoTealProxies_RollsBackWhileOneDoesNotAnswer_ThenMovesBothWithNoWriteLost()
    {
        await using var scenario = await BlueGreenScenario.StartAsync(serveArguments: External);
        var secondPort = ManagedPostgres.FreePort();
        await using var first = await TealProxyProcess.StartAsync(scenario.Teal, "p1");
        await using var second = await TealProxyProcess.StartAsync(scenario.Teal, "p2", [$"app=127.0.0.1:{secondPort}"]);
        var throughSecond = new NpgsqlConnectionStringBuilder(scenario.EndpointConnectionString) { Port = secondPort }.ConnectionString;
        await WaitForEndpointAsync(scenario.EndpointConnectionString);
        await WaitForEndpointAsync(throughSecond);
        var created = await scenario.CreateDeploymentAsync();
        var green = created.GetProperty("green").GetString()!;

        // p2 dies without leaving: it is still registered, and it could still hold clients on
        // blue. The switchover cannot pause it, so it must roll back before the flip.
        await second.KillAsync();
        await using (var probe = new ProbeWriter(scenario.EndpointConnectionString, firstNumber: 1_000_000))
        {
            probe.Start();
            await WaitForAcksAsync(probe, 20);
            var refused = await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(2));
            var failed = await scenario.WaitForStatusAsync("upgrade", TimeSpan.FromMinutes(2), "SWITCHOVER_FAILED", "SWITCHOVER_COMPLETED");
            BlueGreenScenario.Status(failed).ShouldBe("SWITCHOVER_FAILED", $"{failed}\n{refused}");
            (failed.GetProperty("statusReason").GetString() ?? string.Empty).ShouldContain("teal proxy 'p2'", customMessage: failed.ToString());
            failed.GetProperty("green").GetString().ShouldBe(green, "the flip never ran");
            await Task.Delay(TimeSpan.FromSeconds(1));
            await probe.StopAsync();
            probe.Errors.ShouldBeEmpty("the first proxy was paused and resumed to blue, no client saw an error");
        }

        (await BlueGreenScenario.ScalarAsync<string>(Fresh(scenario.EndpointConnectionString), "SHOW server_version")).ShouldStartWith("15.");
        (await BlueGreenScenario.AcceptsWritesAsync(scenario.Blue.ConnectionString(BlueGreenScenario.Database))).ShouldBeTrue("blue is writable again after the rollback");

        // p2 back (same name, same route file): now both move.
        await second.StartAgainAsync();
        await second.WaitForLogAsync(ControlPlaneAnswers(), TimeSpan.FromSeconds(30));
        await WaitForEndpointAsync(throughSecond);
        await using var probeFirst = new ProbeWriter(scenario.EndpointConnectionString);
        await using var probeSecond = new ProbeWriter(throughSecond, firstNumber: 2_000_000);
        probeFirst.Start();
        probeSecond.Start();
        await WaitForAcksAsync(probeFirst, 20);
        await WaitForAcksAsync(probeSecond, 20);

        var switchover = await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(2));
        switchover.ShouldSucceed();
        var ackedAtSwitchover = (probeFirst.Acknowledged.Count, probeSecond.Acknowledged.Count);
        await Task.Delay(TimeSpan.FromSeconds(2));
        await probeFirst.StopAsync();
        await probeSecond.StopAsync();

        var deployment = await scenario.ShowAsync();
        BlueGreenScenario.Status(deployment).ShouldBe("SWITCHOVER_COMPLETED", deployment.ToString());
        (await BlueGreenScenario.ScalarAsync<string>(Fresh(scenario.EndpointConnectionString), "SHOW server_version")).ShouldStartWith("17.");
        (await BlueGreenScenario.ScalarAsync<string>(Fresh(throughSecond), "SHOW server_version")).ShouldStartWith("17.");
        probeFirst.Errors.ShouldBeEmpty("sessions through the first proxy moved to green");
        probeSecond.Errors.ShouldBeEmpty("sessions through the second proxy moved to green");
        probeFirst.Acknowledged.Count.ShouldBeGreaterThan(ackedAtSwitchover.Item1);
        probeSecond.Acknowledged.Count.ShouldBeGreaterThan(ackedAtSwitchover.Item2);

        // Every write acknowledged through either proxy is on green.
        var acked = probeFirst.Acknowledged.Concat(probeSecond.Acknowledged).ToArray();
        await using var connection = new NpgsqlConnection(await scenario.InstanceUrlAsync("app"));
        await connection.OpenAsync();
        await using var count = new NpgsqlCommand($"SELECT count(*) FROM {ProbeWriter.Table} WHERE n = ANY($1)", connection) { Parameters = { new() { Value = acked } } };
        ((long)(await count.ExecuteScalarAsync())!).ShouldBe(acked.Length);

        // /metrics counts the endpoint's clients over both proxies, as their heartbeats report them.
        await MetricsSumOverProxiesAsync(scenario.Teal, "app");
    }

    [Fact]
    public async Task TealProxy_ReplacedBySigterm_KeepsAnEstablishedSessionWorking()
    {
        await using var scenario = await BlueGreenScenario.StartAsync(serveArguments: External);
        await using var old = await TealProxyProcess.StartAsync(scenario.Teal, "old");
        await WaitForEndpointAsync(scenario.EndpointConnectionString);

        await using var session = new NpgsqlConnection(Fresh(scenario.EndpointConnectionString));
        await session.OpenAsync();
        await using (var set = new NpgsqlCommand("SET application_name = 'established'", session))
        {
            await set.ExecuteNonQueryAsync();
        }

        // The replacement listens on the same address beside the old one (SO_REUSEPORT).
        await using var replacement = await TealProxyProcess.StartAsync(scenario.Teal, "new");
        await replacement.WaitForLogAsync(new Regex("Endpoint app listens on"), TimeSpan.FromSeconds(30));
        old.Terminate();
        await old.WaitForLogAsync(new Regex("Draining: no new connections accepted; [1-9]"), TimeSpan.FromSeconds(30));

        // The established session goes on through the old process; new ones reach the new one.
        for (var i = 0; i < 10; i++)
        {
            await using var command = new NpgsqlCommand("SELECT current_setting('application_name')", session);
            ((string)(await command.ExecuteScalarAsync())!).ShouldBe("established");
            (await BlueGreenScenario.ScalarAsync<int>(Fresh(scenario.EndpointConnectionString), "SELECT 1")).ShouldBe(1);
            await Task.Delay(100);
        }

        old.Running.ShouldBeTrue("the old proxy waits for its established session");
        await session.CloseAsync();
        (await old.WaitForExitAsync(TimeSpan.FromSeconds(30))).ShouldBeTrue(old.Log);
        old.ExitCode.ShouldBe(0);

        // It left the control plane, which now drives only the new one.
        using var http = new HttpClient();
        http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", scenario.Teal.Token);
        var proxies = await http.GetFromJsonAsync<JsonElement>($"{scenario.Teal.Url}/api/proxies");
        proxies.EnumerateArray().Select(p => p.GetProperty("name").GetString()).ShouldBe(["new"]);
        (await BlueGreenScenario.ScalarAsync<int>(Fresh(scenario.EndpointConnectionString), "SELECT 1")).ShouldBe(1);
    }

    [GeneratedRegex("Control plane .* answers")]
    private static partial Regex ControlPlaneAnswers();

    [GeneratedRegex("Serving 1 endpoint\\(s\\) from the last route table")]
    private static partial Regex ServingFromFile();

    internal static string Fresh(string connectionString) => new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false }.ConnectionString;

    internal static async Task WaitForEndpointAsync(string connectionString)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            try
            {
                (await BlueGreenScenario.ScalarAsync<int>(Fresh(connectionString), "SELECT 1")).ShouldBe(1);
                return;
            }
            catch (Exception ex) when ((ex is NpgsqlException or IOException or TimeoutException) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(200);
            }
        }
    }

    internal static async Task WaitForAcksAsync(ProbeWriter probe, int count)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (probe.Acknowledged.Count < count)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"the probe got {probe.Acknowledged.Count} acknowledgements: {string.Join("\n", probe.Errors.TakeLast(5))}");
            }

            await Task.Delay(50);
        }
    }

    private static async Task MetricsSumOverProxiesAsync(TealProcess server, string endpoint)
    {
        using var http = new HttpClient();
        http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", server.Token);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            // Both read the proxies' last heartbeats: equal once no heartbeat lands in between.
            var perProxy = (await http.GetFromJsonAsync<JsonElement>($"{server.Url}/api/proxies")).EnumerateArray()
                .Select(p => p.GetProperty("endpoints").EnumerateArray().Where(e => e.GetProperty("name").GetString() == endpoint).Sum(e => e.GetProperty("stats").GetProperty("total").GetInt64()))
                .ToList();
            var metrics = await http.GetStringAsync($"{server.Url}/metrics");
            var scraped = Regex.Match(metrics, $"^teal_endpoint_connections_total\\{{endpoint=\"{endpoint}\"[^}}]*\\}} (\\S+)$", RegexOptions.Multiline);
            if (perProxy.Count == 2 && perProxy.All(t => t > 0) && scraped.Success && double.Parse(scraped.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) == perProxy.Sum())
            {
                return;
            }

            DateTime.UtcNow.ShouldBeLessThan(deadline, $"/metrics does not sum the proxies' connections ({string.Join(" + ", perProxy)}):\n{scraped.Value}");
            await Task.Delay(300);
        }
    }

    private static async Task<bool> ListensAsync(int port)
    {
        using var client = new System.Net.Sockets.TcpClient();
        try
        {
            await client.ConnectAsync("127.0.0.1", port);
            return true;
        }
        catch (System.Net.Sockets.SocketException)
        {
            return false;
        }
    }
}
