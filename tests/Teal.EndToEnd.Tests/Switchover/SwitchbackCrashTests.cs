using Teal.Testing.Load;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// A switchback has the switchover's crash safety: <c>kill -9</c> of <c>teal serve</c> before
/// the point of no return unwinds it (green stays production, still replicating to the old
/// blue, and a second switchback succeeds); from the flip on the restart finishes it (the old
/// blue is production again, replicating forward). No acknowledged write is lost either way.
/// </summary>
public sealed class SwitchbackCrashTests
{
    private static string FaultHost => RepoPaths.Built("tests/Teal.FaultHost", "Teal.FaultHost.dll");

    [Theory]
    [InlineData("crash-before:fence-blue", false)]
    [InlineData("crash-after:fence-blue", false)]
    [InlineData("crash-before:start-reverse-replication", true)]
    public async Task KillDuringSwitchback_RestartFinishesOrUnwinds_NoLostWrite(string fault, bool finishes)
    {
        await using var scenario = await BlueGreenScenario.StartAsync(tealEntry: FaultHost, tealEnvironment: new Dictionary<string, string>());
        await scenario.CreateDeploymentAsync();
        await using var probe = new ProbeWriter(scenario.EndpointConnectionString);
        probe.Start();
        (await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(2))).ShouldSucceed();

        // The fault applies from the next start on: the switchback is the run that dies.
        await scenario.Teal.KillAsync();
        scenario.Teal.Environment = new Dictionary<string, string> { ["TEAL_FAULT"] = fault };
        await scenario.Teal.StartAgainAsync();
        await scenario.WaitForStatusAsync("upgrade", TimeSpan.FromSeconds(60), "SWITCHOVER_COMPLETED");
        await Task.Delay(1000);
        await scenario.Cli.RunAsync(["switchback", "upgrade"], TimeSpan.FromMinutes(1));
        (await scenario.Teal.WaitForExitAsync(TimeSpan.FromSeconds(60))).ShouldBeTrue($"teal serve was not killed at {fault}:\n{scenario.Teal.Log}");

        scenario.Teal.Environment = new Dictionary<string, string>();
        await scenario.Teal.StartAgainAsync();
        var deployment = await scenario.WaitForStatusAsync("upgrade", TimeSpan.FromSeconds(90), "AVAILABLE", "SWITCHOVER_FAILED");
        BlueGreenScenario.Status(deployment).ShouldBe(finishes ? "AVAILABLE" : "SWITCHOVER_FAILED", deployment.ToString());
        if (!finishes)
        {
            // Unwound, pg_hba.conf too: the fenced file the fence wrote while the endpoints
            // drained (before its crash, or its reload) is gone, so a reload now shuts no one out.
            var serving = await scenario.InstanceUrlAsync("app");
            await BlueGreenScenario.ExecuteAsync(await scenario.InstanceUrlAsync("app", asTeal: true), "SELECT pg_reload_conf()");
            await Task.Delay(500);
            (await BlueGreenScenario.AcceptsWritesAsync(serving)).ShouldBeTrue($"the production server refuses its clients after a reload once {fault} was unwound");

            // Green is production and still replicates back; the switchback can be run again.
            (await scenario.Cli.RunAsync(["switchback", "upgrade", "--wait"], TimeSpan.FromMinutes(2))).ShouldSucceed();
            BlueGreenScenario.Status(await scenario.ShowAsync()).ShouldBe("AVAILABLE");
        }

        await Task.Delay(1500);
        await probe.StopAsync();
        var shown = await scenario.ShowAsync();
        shown.GetProperty("blue").GetString().ShouldBe("app");
        var production = await scenario.InstanceUrlAsync("app");
        (await BlueGreenScenario.AcceptsWritesAsync(production)).ShouldBeTrue();
        (await BlueGreenScenario.AcceptsWritesAsync(await scenario.InstanceUrlAsync(shown.GetProperty("green").GetString()!))).ShouldBeFalse();
        (await BlueGreenScenario.ScalarAsync<string>(production, "SHOW server_version")).ShouldStartWith("15.");

        var acked = probe.Acknowledged;
        acked.Count.ShouldBeGreaterThan(0);
        (await BlueGreenScenario.ScalarAsync<long>(production, $"SELECT count(*) FROM {ProbeWriter.Table} WHERE n = ANY('{{{string.Join(',', acked)}}}'::bigint[])"))
            .ShouldBe(acked.Count, $"acknowledged probe rows missing after {fault}");
    }
}
