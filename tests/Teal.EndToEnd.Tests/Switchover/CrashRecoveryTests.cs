using Npgsql;
using Teal.Testing.Load;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// <c>kill -9</c> of <c>teal serve</c> at every phase of a switchover under a probe's write load,
/// then a restart: Teal finishes (from the flip on) or unwinds (before it) from its journal.
/// Afterwards exactly one side accepts writes and every acknowledged probe row is on it.
/// </summary>
public sealed class CrashRecoveryTests
{
    private static string FaultHost => RepoPaths.Built("tests/Teal.FaultHost", "Teal.FaultHost.dll");

    public static TheoryData<string, bool> CrashPoints => new()
    {
        { "crash-before:pause-endpoints", false },
        { "crash-before:drain-endpoints", false },
        { "crash-before:fence-blue", false },
        { "crash-after:fence-blue", false },
        { "crash-before:drain-blue", false },
        { "crash-before:catch-up", false },
        { "crash-before:sync-sequences", false },
        { "crash-after:sync-sequences", false },
        { "crash-before:flip", true },
        { "crash-after:flip", true },
        { "crash-before:open-green", true },
        { "crash-before:resume-endpoints", true },
        { "crash-before:stop-replication", true },
    };

    [Theory]
    [MemberData(nameof(CrashPoints))]
    public async Task KillDuringSwitchover_RestartFinishesOrUnwinds_OneWritableSideAndNoLostWrite(string fault, bool finishes)
    {
        await using var scenario = await BlueGreenScenario.StartAsync(tealEntry: FaultHost, tealEnvironment: new Dictionary<string, string> { ["TEAL_FAULT"] = fault });
        var created = await scenario.CreateDeploymentAsync();
        var greenUrl = await scenario.InstanceUrlAsync(created.GetProperty("green").GetString()!);
        var blueUrl = scenario.Blue.ConnectionString(BlueGreenScenario.Database);

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
        var expected = finishes ? "SWITCHOVER_COMPLETED" : "SWITCHOVER_FAILED";
        var deployment = await scenario.WaitForStatusAsync("upgrade", TimeSpan.FromSeconds(90), "SWITCHOVER_COMPLETED", "SWITCHOVER_FAILED");
        BlueGreenScenario.Status(deployment).ShouldBe(expected, deployment.ToString());

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
}
