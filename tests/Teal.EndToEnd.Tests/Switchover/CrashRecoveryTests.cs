using Npgsql;
using Teal.Testing.Load;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// <c>kill -9</c> of <c>teal serve</c> at every phase of a switchover under a probe's write load,
/// then a restart: Teal finishes (from the flip on) or unwinds (before it) from its journal.
/// Afterwards exactly one side accepts writes and every acknowledged probe row is on it, and
/// long-lived clients that connected while recovery decided are all on that side, none on the fenced one.
/// </summary>
public sealed class CrashRecoveryTests
{
    private static string FaultHost => RepoPaths.Built("tests/Teal.FaultHost", "Teal.FaultHost.dll");

    /// <summary>
    /// A point that leaves the journal and the servers as one listed here is not repeated (each
    /// case is a minute of the suite under load): after fence-blue is before drain-blue, and
    /// catch-up and sync-sequences start in one commit.
    /// </summary>
    public static TheoryData<string, bool> CrashPoints => new()
    {
        { "crash-before:pause-endpoints", false },
        { "crash-before:drain-endpoints", false },
        { "crash-before:fence-blue", false },
        { "crash-after:fence-blue", false },
        { "crash-before:catch-up", false },
        { "crash-after:sync-sequences", false },
        { "crash-before:flip", true },
        { "crash-after:flip", true },
        { "crash-before:open-green", true },
        { "crash-before:resume-endpoints", true },
        { "crash-before:stop-replication", true },
        { "crash-before:start-reverse-replication", true },
    };

    [Theory]
    [MemberData(nameof(CrashPoints))]
    public async Task KillDuringSwitchover_RestartFinishesOrUnwinds_OneWritableSideAndNoLostWrite(string fault, bool finishes)
    {
        await using var scenario = await BlueGreenScenario.StartAsync(tealEntry: FaultHost, tealEnvironment: new Dictionary<string, string> { ["TEAL_FAULT"] = fault });
        var created = await scenario.CreateDeploymentAsync();
        var greenUrl = await scenario.InstanceUrlAsync(created.GetProperty("green").GetString()!);
        var blueUrl = scenario.Blue.ConnectionString(BlueGreenScenario.Database);
        // A fenced side admits only Teal's own login: that is how the test looks at its sessions.
        var greenAsTeal = await scenario.InstanceUrlAsync(created.GetProperty("green").GetString()!, asTeal: true);
        var blueAsTeal = await scenario.InstanceUrlAsync(created.GetProperty("blue").GetString()!, asTeal: true);

        await using var probe = new ProbeWriter(scenario.EndpointConnectionString);
        probe.Start();
        await Task.Delay(500);
        // The CLI returns once the switchover started; the fault host dies in the background.
        await scenario.Cli.RunAsync(["switchover", "upgrade"], TimeSpan.FromMinutes(1));
        (await scenario.Teal.WaitForExitAsync(TimeSpan.FromSeconds(60))).ShouldBeTrue($"teal serve was not killed at {fault}:\n{scenario.Teal.Log}");

        // Never two writable sides, even while Teal is down.
        var blueWritable = await BlueGreenScenario.AcceptsWritesAsync(blueUrl);
        var greenWritable = await BlueGreenScenario.AcceptsWritesAsync(greenUrl);
        (blueWritable && greenWritable).ShouldBeFalse($"both sides writable after {fault}");

        scenario.Teal.Environment = new Dictionary<string, string>();
        await scenario.Teal.StartAgainAsync();
        // Long-lived clients that connect while recovery decides (the proxy's own connections died
        // with Teal): held, then let through to the side recovery chose, where they stay.
        var longLived = Enumerable.Range(0, 3).Select(_ => OpenLongLivedAsync(scenario.EndpointConnectionString)).ToList();
        var expected = finishes ? "SWITCHOVER_COMPLETED" : "SWITCHOVER_FAILED";
        var deployment = await scenario.WaitForStatusAsync("upgrade", TimeSpan.FromSeconds(90), "SWITCHOVER_COMPLETED", "SWITCHOVER_FAILED");
        BlueGreenScenario.Status(deployment).ShouldBe(expected, deployment.ToString());
        if (!finishes)
        {
            // The slot made on green for replication back to blue, before the pause, left with the rollback.
            (await BlueGreenScenario.ScalarAsync<long>(greenAsTeal, "SELECT count(*) FROM pg_replication_slots")).ShouldBe(0, $"a replication slot left on green after {fault}");
        }
        var clients = await Task.WhenAll(longLived).WaitAsync(TimeSpan.FromSeconds(90));
        try
        {
            var n = -1L;
            foreach (var client in clients)
            {
                (await ScalarAsync<string>(client, "SHOW server_version")).ShouldStartWith(finishes ? "17." : "15.", customMessage: $"a long-lived client is on the fenced side after {fault}");
                await using var write = new NpgsqlCommand($"INSERT INTO {ProbeWriter.Table} (n) VALUES ($1)", client) { Parameters = { new() { Value = n-- } } };
                await write.ExecuteNonQueryAsync();
            }

            var fencedSide = finishes ? blueAsTeal : greenAsTeal;
            (await BlueGreenScenario.ScalarAsync<long>(fencedSide, $"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{LongLivedName}'"))
                .ShouldBe(0, $"client connections on the fenced side after {fault}");
        }
        finally
        {
            foreach (var client in clients)
            {
                await client.DisposeAsync();
            }
        }

        // Let the probe write through the endpoint on the surviving side for a moment.
        await Task.Delay(1500);
        await probe.StopAsync();

        var writable = finishes ? greenUrl : blueUrl;
        var fenced = finishes ? blueUrl : greenUrl;
        (await BlueGreenScenario.AcceptsWritesAsync(writable)).ShouldBeTrue();
        (await BlueGreenScenario.AcceptsWritesAsync(fenced)).ShouldBeFalse();
        (await BlueGreenScenario.ScalarAsync<string>(scenario.EndpointConnectionString, "SHOW server_version")).ShouldStartWith(finishes ? "17." : "15.");

        var acked = probe.Acknowledged;
        acked.Count.ShouldBeGreaterThan(0);
        await using var connection = new NpgsqlConnection(writable);
        await connection.OpenAsync();
        await using var count = new NpgsqlCommand($"SELECT count(*) FROM {ProbeWriter.Table} WHERE n = ANY($1)", connection) { Parameters = { new() { Value = acked.ToArray() } } };
        ((long)(await count.ExecuteScalarAsync())!).ShouldBe(acked.Count, $"acknowledged probe rows missing after {fault}");
    }

    private const string LongLivedName = "teal-test-long-lived";

    /// <summary>
    /// A client that connects once and keeps its connection (no reconnect on error); held connects
    /// may wait. teal serve answers its API before it binds the endpoints' listeners again
    /// (<c>StartupWork</c>): until then the port refuses, as any restarted server's does, and the
    /// client tries again, as a driver's pool would.
    /// </summary>
    private static async Task<NpgsqlConnection> OpenLongLivedAsync(string endpoint)
    {
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(endpoint) { Pooling = false, ApplicationName = LongLivedName, Timeout = 120 }.ConnectionString);
            try
            {
                await connection.OpenAsync();
                return connection;
            }
            catch (NpgsqlException ex) when (ex.InnerException is System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.ConnectionRefused } && DateTime.UtcNow < until)
            {
                await connection.DisposeAsync();
                await Task.Delay(50);
            }
        }
    }

    private static async Task<T> ScalarAsync<T>(NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        return (T)(await command.ExecuteScalarAsync())!;
    }
}
