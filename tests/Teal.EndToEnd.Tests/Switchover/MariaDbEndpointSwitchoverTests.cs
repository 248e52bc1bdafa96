using MySqlConnector;
using Teal.Testing.Load;
using Teal.Testing.Processes;
using Xunit.Abstractions;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// MariaDB blue/green through Teal's endpoint, which speaks the MySQL protocol for it: a probe
/// writes through the endpoint across the switchover (every acknowledged write ends on green,
/// old blue refuses writes), and <c>kill -9</c> of <c>teal serve</c> at phases of the switchover
/// converges on restart to one writable side holding every acknowledged write, with the
/// endpoint routing to it.
/// </summary>
public sealed class MariaDbEndpointSwitchoverTests(ITestOutputHelper output)
{
    private static string FaultHost => RepoPaths.Built("tests/Teal.FaultHost", "Teal.FaultHost.dll");

    [Fact]
    public async Task Switchover_ProbeThroughTheEndpoint_EveryAcknowledgedWriteOnGreen_OldBlueRefusesWrites()
    {
        await using var scenario = await MariaDbScenario.StartAsync();
        await scenario.CreateDeploymentAsync();

        await using var probe = new MySqlProbeWriter(scenario.EndpointConnectionString);
        probe.Start();
        await Task.Delay(TimeSpan.FromSeconds(2));
        var switchover = await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait", "--output", "json"], TimeSpan.FromMinutes(2));
        switchover.ShouldSucceed();
        var ackedAtSwitchover = probe.Acknowledged.Count;
        await Task.Delay(TimeSpan.FromSeconds(2));
        await probe.StopAsync();

        var deployment = await scenario.ShowAsync();
        BlueGreenScenario.Status(deployment).ShouldBe("SWITCHOVER_COMPLETED", deployment.ToString());
        deployment.GetProperty("green").GetString().ShouldBe("app");
        var oldBlue = deployment.GetProperty("blue").GetString()!;

        var acked = probe.Acknowledged;
        output.WriteLine($"probe: {acked.Count} acknowledged, longest gap {probe.LongestGap.TotalMilliseconds:0} ms, {probe.Errors.Count} errors: {string.Join(" | ", probe.Errors)}");
        output.WriteLine($"switchover: {deployment.GetProperty("switchover")}");
        acked.Count.ShouldBeGreaterThan(100);
        acked.Count.ShouldBeGreaterThan(ackedAtSwitchover, "the probe kept writing through the endpoint after the switchover: " + string.Join("\n", probe.Errors.TakeLast(5)));
        var green = await scenario.InstanceUrlAsync("app");
        (await MariaDbScenario.CountProbeRowsAsync(green, acked)).ShouldBe(acked.Count, "every acknowledged write is on green");

        // The endpoint now reaches green; old blue refuses the application's writes.
        var greenPort = new MySqlConnectionStringBuilder(green).Port;
        greenPort.ShouldNotBe((uint)scenario.Blue.Port);
        (await MariaDbScenario.ScalarAsync<long>(scenario.EndpointConnectionString, "SELECT @@port")).ShouldBe(greenPort);
        (await MariaDbScenario.AcceptsWritesAsync(scenario.BlueConnectionString)).ShouldBeFalse("old blue refuses writes");
        (await MariaDbScenario.AcceptsWritesAsync(await scenario.AppUrlAsync(oldBlue))).ShouldBeFalse();

        // AUTO_INCREMENT continues above blue's rows through the endpoint.
        await using (var connection = new MySqlConnection(scenario.EndpointConnectionString))
        {
            await connection.OpenAsync();
            await using var insert = new MySqlCommand("INSERT INTO orders (note) VALUES ('after'); SELECT LAST_INSERT_ID()", connection);
            Convert.ToInt64(await insert.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture).ShouldBeGreaterThan(500);
        }
    }

    /// <summary>A smaller set of phases than PostgreSQL's crash test (suite time): each side of the flip, and the endpoint moves.</summary>
    public static TheoryData<string, bool> CrashPoints => new()
    {
        { "crash-before:drain-endpoints", false },
        { "crash-after:fence-blue", false },
        { "crash-after:flip", true },
        { "crash-before:resume-endpoints", true },
    };

    [Theory]
    [MemberData(nameof(CrashPoints))]
    public async Task KillDuringSwitchover_RestartFinishesOrUnwinds_OneWritableSideAndNoLostWrite(string fault, bool finishes)
    {
        await using var scenario = await MariaDbScenario.StartAsync(tealEntry: FaultHost, tealEnvironment: new Dictionary<string, string> { ["TEAL_FAULT"] = fault });
        var created = await scenario.CreateDeploymentAsync();
        var greenName = created.GetProperty("green").GetString()!;
        var greenUrl = await scenario.AppUrlAsync(greenName);
        // Green's own admin login: fenced until open-green, the way to read it once it took over.
        var greenAdmin = await scenario.InstanceUrlAsync(greenName);
        var greenPort = new MySqlConnectionStringBuilder(greenUrl).Port;
        var blueUrl = scenario.BlueConnectionString;

        await using var probe = new MySqlProbeWriter(scenario.EndpointConnectionString);
        probe.Start();
        await Task.Delay(500);
        await scenario.Cli.RunAsync(["switchover", "upgrade"], TimeSpan.FromMinutes(1));
        (await scenario.Teal.WaitForExitAsync(TimeSpan.FromSeconds(60))).ShouldBeTrue($"teal serve was not killed at {fault}:\n{scenario.Teal.Log}");

        // Never two writable sides, even while Teal is down.
        var blueWritable = await MariaDbScenario.AcceptsWritesAsync(blueUrl);
        var greenWritable = await MariaDbScenario.AcceptsWritesAsync(greenUrl);
        (blueWritable && greenWritable).ShouldBeFalse($"both sides writable after {fault}");

        scenario.Teal.Environment = new Dictionary<string, string>();
        await scenario.Teal.StartAgainAsync();
        // Clients connecting while recovery decides are held, then let through to the side it chose.
        var longLived = Enumerable.Range(0, 3).Select(_ => OpenLongLivedAsync(scenario.EndpointConnectionString)).ToList();
        var deployment = await scenario.WaitForStatusAsync("upgrade", TimeSpan.FromSeconds(90), "SWITCHOVER_COMPLETED", "SWITCHOVER_FAILED");
        BlueGreenScenario.Status(deployment).ShouldBe(finishes ? "SWITCHOVER_COMPLETED" : "SWITCHOVER_FAILED", deployment.ToString());
        var expectedPort = finishes ? greenPort : (uint)scenario.Blue.Port;
        var clients = await Task.WhenAll(longLived).WaitAsync(TimeSpan.FromSeconds(90));
        try
        {
            foreach (var client in clients)
            {
                await using var port = new MySqlCommand("SELECT @@port", client);
                Convert.ToUInt32(await port.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture).ShouldBe(expectedPort, $"a long-lived client is on the fenced side after {fault}");
            }
        }
        finally
        {
            foreach (var client in clients)
            {
                await client.DisposeAsync();
            }
        }

        await Task.Delay(1500);
        await probe.StopAsync();

        var writable = finishes ? greenUrl : blueUrl;
        var fenced = finishes ? blueUrl : greenUrl;
        (await MariaDbScenario.AcceptsWritesAsync(writable)).ShouldBeTrue();
        (await MariaDbScenario.AcceptsWritesAsync(fenced)).ShouldBeFalse();
        (await MariaDbScenario.ScalarAsync<long>(scenario.EndpointConnectionString, "SELECT @@port")).ShouldBe(expectedPort);

        var acked = probe.Acknowledged;
        acked.Count.ShouldBeGreaterThan(0);
        var onWritable = finishes ? greenAdmin : scenario.Blue.ConnectionString(MariaDbScenario.Database);
        (await MariaDbScenario.CountProbeRowsAsync(onWritable, acked)).ShouldBe(acked.Count, $"acknowledged probe rows missing after {fault}");
    }

    /// <summary>
    /// A client that connects once and keeps its connection; a held connect may wait. teal serve
    /// answers its API before it binds the endpoints' listeners again (<c>StartupWork</c>): until
    /// then the port refuses, as any restarted server's does, and the client tries again, as a
    /// driver's pool would (CrashRecoveryTests' clients do the same).
    /// </summary>
    private static async Task<MySqlConnection> OpenLongLivedAsync(string endpoint)
    {
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            var connection = new MySqlConnection(new MySqlConnectionStringBuilder(endpoint) { ConnectionTimeout = 120 }.ConnectionString);
            try
            {
                await connection.OpenAsync();
                return connection;
            }
            catch (MySqlException ex) when (ex.ErrorCode == MySqlErrorCode.UnableToConnectToHost && DateTime.UtcNow < until)
            {
                await connection.DisposeAsync();
                await Task.Delay(50);
            }
        }
    }
}
