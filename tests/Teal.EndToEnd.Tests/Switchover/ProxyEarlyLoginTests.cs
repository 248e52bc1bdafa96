using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Npgsql;
using Teal.Testing.Load;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// Teal serve's endpoint logs the sessions it moves in on a green Teal provisioned before the
/// pause, over green's local socket, and so does a <c>teal proxy</c> on green's machine running as
/// Teal's OS user. A <c>teal proxy</c> logs the other sessions it moves in on green as soon as green's logins are back
/// (the switchover's <c>logins-open</c> call), holds them until the resume, and lets a resume that
/// does not route there — a rollback — drop those logins: its clients go on on blue, with no error.
/// Pauses come from the test-only host (<c>tests/Teal.FaultHost</c>): a step that waits first.
/// </summary>
public sealed class ProxyEarlyLoginTests
{
    private static readonly string[] External = ["--endpoints", "external"];

    private static string FaultHost => RepoPaths.Built("tests/Teal.FaultHost", "Teal.FaultHost.dll");

    [Fact]
    public async Task Switchover_ThroughTealProxy_HeldMovedSessionIsLoggedInOnGreenBeforeTheResume_AndGoesOnOnThatBackend()
    {
        // The resume waits 8 s after green opened: the window in which the session is held.
        await using var scenario = await BlueGreenScenario.StartAsync(tealEntry: FaultHost, tealEnvironment: new Dictionary<string, string> { ["TEAL_FAULT"] = "delay:resume-endpoints:8" }, serveArguments: External);
        await using var proxy = await TealProxyProcess.StartAsync(scenario.Teal, "p1");
        await ProxyProcessTests.WaitForEndpointAsync(scenario.EndpointConnectionString);
        var created = await scenario.CreateDeploymentAsync();
        var greenUrl = await scenario.InstanceUrlAsync(created.GetProperty("green").GetString()!, asTeal: true);
        var name = $"teal-early-{Guid.NewGuid():N}"[..24];
        await using var session = await OpenSessionAsync(scenario, name);
        await using var probe = new ProbeWriter(scenario.EndpointConnectionString);
        probe.Start();
        await ProxyProcessTests.WaitForAcksAsync(probe, 20);

        var switchover = scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(3));
        var pid = await WaitForBackendAsync(greenUrl, name, switchover, "green");
        var held = await EndpointStateAsync(scenario, proxy);
        held.GetProperty("paused").GetBoolean().ShouldBeTrue($"the session was logged in on green only at the resume:\n{proxy.Log}");
        switchover.IsCompleted.ShouldBeFalse("the resume waits");

        (await switchover).ShouldSucceed();
        (await OnSessionAsync(session, "SELECT pg_backend_pid() || ' ' || current_setting('server_version_num')::int / 10000 || ' ' || current_setting('work_mem')"))
            .ShouldBe($"{pid} 17 9MB", "the session goes on on the backend it logged in to before the resume, with its settings replayed");
        await Task.Delay(TimeSpan.FromSeconds(1));
        await probe.StopAsync();
        probe.Errors.ShouldBeEmpty();
        proxy.Log.ShouldContain("logins are back on");
        // The quiet session's state was read before the pause (the switchover's prepare reaches the proxy too).
        proxy.Log.ShouldContain("read ahead of the pause");
    }

    /// <summary>
    /// Teal serve's own endpoint, on green's machine, and a green Teal provisioned: the moving
    /// session, its client at work, logs in on green before the pause, while green is still fenced, over green's local
    /// socket (peer login of Teal's OS user). It is there while catch-up runs, before green opens,
    /// and the session goes on on that backend.
    /// </summary>
    [Fact]
    public async Task Switchover_InProcessEndpoint_MovedSessionIsLoggedInOnFencedGreenBeforeThePause_AndGoesOnOnThatBackend()
    {
        await using var scenario = await BlueGreenScenario.StartAsync(tealEntry: FaultHost, tealEnvironment: new Dictionary<string, string> { ["TEAL_FAULT"] = "delay:catch-up:6" });

        await MovesOnFencedGreenBeforeThePauseAsync(scenario, "teal-fenced", () => scenario.Teal.Log);

        scenario.Teal.Log.ShouldContain("started before the pause");
    }

    /// <summary>
    /// The same through a <c>teal proxy</c> on green's machine, running as Teal's OS user: the
    /// switchover asks it too (<c>log-in-before-pause</c>), and its active session is on fenced
    /// green during catch-up, then goes on on that backend.
    /// </summary>
    [Fact]
    public async Task Switchover_ThroughTealProxy_ActiveSessionIsLoggedInOnFencedGreenBeforeThePause_AndGoesOnOnThatBackend()
    {
        await using var scenario = await BlueGreenScenario.StartAsync(tealEntry: FaultHost, tealEnvironment: new Dictionary<string, string> { ["TEAL_FAULT"] = "delay:catch-up:6" }, serveArguments: External);
        await using var proxy = await TealProxyProcess.StartAsync(scenario.Teal, "p1", environment: TealProcess.WarmUpOn);
        await ProxyProcessTests.WaitForEndpointAsync(scenario.EndpointConnectionString);

        await MovesOnFencedGreenBeforeThePauseAsync(scenario, "teal-pfenced", () => $"{proxy.Log}\n{scenario.Teal.Log}");

        proxy.Log.ShouldContain("started before the pause");
        proxy.Log.ShouldContain("methods ahead of use", customMessage: "the proxy compiles its code at start, not in its first pause");
    }

    [Fact]
    public async Task Switchover_RolledBackAfterTealProxyLoggedMovedSessionsInOnGreensSide_ClientsGoOnOnBlueWithNoError()
    {
        // catch-up waits 20 s first: the window in which the proxy is told logins are open, then green stops.
        await using var scenario = await BlueGreenScenario.StartAsync(tealEntry: FaultHost, tealEnvironment: new Dictionary<string, string> { ["TEAL_FAULT"] = "delay:catch-up:20" }, serveArguments: External);
        await using var proxy = await TealProxyProcess.StartAsync(scenario.Teal, "p1");
        await ProxyProcessTests.WaitForEndpointAsync(scenario.EndpointConnectionString);
        var created = await scenario.Cli.RunAsync(["create", "upgrade", "--source", "app", "--target-engine-version", "17", "--target-readers", "1", "--wait"], TimeSpan.FromMinutes(5));
        created.ShouldSucceed();
        var green = (await scenario.ShowAsync()).GetProperty("green").GetString()!;
        var greenUrl = await scenario.InstanceUrlAsync(green, asTeal: true);
        using var instances = JsonDocument.Parse((await scenario.Cli.RunAsync("instance", "list", "--output", "json")).Stdout);
        var reader = instances.RootElement.EnumerateArray().Single(i => i.GetProperty("name").GetString() == $"{green}-r1");
        // Green itself admits no client before open-green, which a rollback never reaches; its
        // reader does: a real server on green's side for the early logins the rollback must drop.
        var readerUrl = new NpgsqlConnectionStringBuilder(scenario.EndpointConnectionString) { Host = reader.GetProperty("host").GetString(), Port = reader.GetProperty("port").GetInt32(), Pooling = false }.ConnectionString;
        var name = $"teal-back-{Guid.NewGuid():N}"[..24];
        await using var session = await OpenSessionAsync(scenario, name);
        await using var probe = new ProbeWriter(scenario.EndpointConnectionString);
        probe.Start();
        await ProxyProcessTests.WaitForAcksAsync(probe, 20);

        var switchover = scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(3));
        await scenario.WaitForPhaseAsync("catch-up");
        // What the control plane sends once green's logins are back, here ahead of a rollback.
        using (var admin = AdminClient(scenario, proxy))
        {
            var target = new { instance = green, host = reader.GetProperty("host").GetString(), port = reader.GetProperty("port").GetInt32(), database = BlueGreenScenario.Database };
            using var told = await admin.PostAsJsonAsync("/proxy/endpoints/app/logins-open", new { target });
            ((int)told.StatusCode).ShouldBe(204, await told.Content.ReadAsStringAsync());
        }

        await WaitForBackendAsync(readerUrl, name, switchover, "green's reader");
        (await EndpointStateAsync(scenario, proxy)).GetProperty("paused").GetBoolean().ShouldBeTrue();
        await BlueGreenScenario.StopServerAsync(greenUrl);

        var result = await switchover;
        result.ExitCode.ShouldBe(1, result.ToString());
        BlueGreenScenario.Status(await scenario.ShowAsync()).ShouldBe("SWITCHOVER_FAILED");
        (await OnSessionAsync(session, "SELECT inet_server_port() || ' ' || current_setting('work_mem')"))
            .ShouldBe($"{scenario.Blue.Port} 9MB", "the resume routed to blue: the early login was dropped and the session moved back there");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (await BlueGreenScenario.ScalarAsync<long>(readerUrl, $"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{name}'") > 0)
        {
            DateTime.UtcNow.ShouldBeLessThan(deadline, "the login made ahead on green's side is closed");
            await Task.Delay(200);
        }

        var ackedAtRollback = probe.Acknowledged.Count;
        await Task.Delay(TimeSpan.FromSeconds(1));
        await probe.StopAsync();
        probe.Errors.ShouldBeEmpty($"clients held through the rollback go on on blue:\n{proxy.Log}");
        probe.Acknowledged.Count.ShouldBeGreaterThan(ackedAtRollback);
        var acked = probe.Acknowledged;
        await using var connection = new NpgsqlConnection(scenario.Blue.ConnectionString(BlueGreenScenario.Database));
        await connection.OpenAsync();
        await using var count = new NpgsqlCommand($"SELECT count(*) FROM {ProbeWriter.Table} WHERE n = ANY($1)", connection) { Parameters = { new() { Value = acked.ToArray() } } };
        ((long)(await count.ExecuteScalarAsync())!).ShouldBe(acked.Count);
    }

    /// <summary>
    /// Creates the deployment, then switches over (catch-up held 6 s by the fault host) while a
    /// session's client is at work through the endpoint, under the probe: the session is on green
    /// during catch-up, green still fenced, and after the switchover it goes on on that very
    /// backend with its settings; the probe saw no error.
    /// </summary>
    private static async Task MovesOnFencedGreenBeforeThePauseAsync(BlueGreenScenario scenario, string prefix, Func<string> log)
    {
        var created = await scenario.CreateDeploymentAsync();
        var greenUrl = await scenario.InstanceUrlAsync(created.GetProperty("green").GetString()!, asTeal: true);
        var name = $"{prefix}-{Guid.NewGuid():N}"[..24];
        await using var session = await OpenSessionAsync(scenario, name);
        await using var probe = new ProbeWriter(scenario.EndpointConnectionString);
        probe.Start();
        await ProxyProcessTests.WaitForAcksAsync(probe, 20);

        // The session is at work (a quiet one logs in once green opens).
        using var stop = new CancellationTokenSource();
        var busy = KeepBusyAsync(session, stop.Token);
        var switchover = scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(3));
        await scenario.WaitForPhaseAsync("catch-up");
        var pid = await BlueGreenScenario.ScalarAsync<int>(greenUrl, $"SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE application_name = '{name}' AND usename = '{BlueGreenScenario.AppUser}'");
        await stop.CancelAsync();
        pid.ShouldNotBe(0, $"the session was not logged in on green before green opened:\n{log()}");
        (await BlueGreenScenario.ScalarAsync<string>(greenUrl, "SELECT current_setting('default_transaction_read_only')")).ShouldBe("on", "green is still fenced");

        (await switchover).ShouldSucceed();
        await busy;
        (await OnSessionAsync(session, "SELECT pg_backend_pid() || ' ' || current_setting('server_version_num')::int / 10000 || ' ' || current_setting('work_mem')"))
            .ShouldBe($"{pid} 17 9MB", "the session goes on on the backend it logged in to before the pause, with its settings replayed");
        await Task.Delay(TimeSpan.FromSeconds(1));
        await probe.StopAsync();
        probe.Errors.ShouldBeEmpty();
    }

    private static async Task<NpgsqlConnection> OpenSessionAsync(BlueGreenScenario scenario, string name)
    {
        var session = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(ProxyProcessTests.Fresh(scenario.EndpointConnectionString)) { ApplicationName = name }.ConnectionString);
        await session.OpenAsync();
        await using var set = new NpgsqlCommand("SET work_mem = '9MB'", session);
        await set.ExecuteNonQueryAsync();
        return session;
    }

    /// <summary>
    /// The session's client at work until <paramref name="stop"/>, on a thread of its own
    /// (<see cref="ClientThread"/>): the proxy counts a session active when its client sent
    /// something in the 200 ms before the pause.
    /// </summary>
    private static Task<bool> KeepBusyAsync(NpgsqlConnection session, CancellationToken stop) =>
        ClientThread.Start("busy client", () =>
        {
            while (!stop.IsCancellationRequested)
            {
                using var command = new NpgsqlCommand("SELECT 'busy'", session);
                command.ExecuteScalar();
                Thread.Sleep(10);
            }

            return true;
        });

    private static async Task<string> OnSessionAsync(NpgsqlConnection session, string sql)
    {
        await using var command = new NpgsqlCommand(sql, session);
        return (string)(await command.ExecuteScalarAsync())!; // The queries here answer one text value.
    }

    /// <summary>The pid of the moved session's backend on <paramref name="serverUrl"/>, logged in with the application's role, once there.</summary>
    private static async Task<int> WaitForBackendAsync(string serverUrl, string name, Task<CliResult> switchover, string where)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            var pid = await BlueGreenScenario.ScalarAsync<int>(serverUrl, $"SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE application_name = '{name}' AND usename = '{BlueGreenScenario.AppUser}'");
            if (pid != 0)
            {
                return pid;
            }

            switchover.IsCompleted.ShouldBeFalse($"the switchover ended before the session logged in on {where}: {(switchover.IsCompleted ? switchover.Result.ToString() : string.Empty)}");
            DateTime.UtcNow.ShouldBeLessThan(deadline, $"the moved session never logged in on {where}");
            await Task.Delay(100);
        }
    }

    private static HttpClient AdminClient(BlueGreenScenario scenario, TealProxyProcess proxy)
    {
        var http = new HttpClient { BaseAddress = proxy.AdminUrl };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", scenario.Teal.Token);
        return http;
    }

    private static async Task<JsonElement> EndpointStateAsync(BlueGreenScenario scenario, TealProxyProcess proxy)
    {
        using var admin = AdminClient(scenario, proxy);
        return await admin.GetFromJsonAsync<JsonElement>("/proxy/endpoints/app");
    }
}
