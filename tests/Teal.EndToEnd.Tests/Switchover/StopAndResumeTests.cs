using System.Text.Json;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// Past the point of no return a permanent error stops the switchover where it is — the step,
/// the error and the fix shown, nothing running it — and <c>teal switchover ID --resume</c>
/// finishes it once the cause is gone.
/// </summary>
public sealed class StopAndResumeTests
{
    private static string FaultHost => RepoPaths.Built("tests/Teal.FaultHost", "Teal.FaultHost.dll");

    [Fact]
    public async Task PermanentErrorAfterTheFlip_StopsWithTheFix_AndResumeFinishes()
    {
        await using var scenario = await BlueGreenScenario.StartAsync(tealEntry: FaultHost, tealEnvironment: new Dictionary<string, string> { ["TEAL_FAULT"] = "fail:stop-replication" });
        await scenario.CreateDeploymentAsync();

        var run = await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(2));

        run.ExitCode.ShouldBe(1, run.ToString());
        run.Stderr.ShouldContain("stopped after the point of no return");
        run.Stderr.ShouldContain("teal switchover upgrade --resume");
        var stopped = await scenario.ShowAsync();
        BlueGreenScenario.Status(stopped).ShouldBe("SWITCHOVER_STOPPED", stopped.ToString());
        var switchover = stopped.GetProperty("switchover");
        switchover.GetProperty("phase").GetString().ShouldBe("stop-replication");
        switchover.GetProperty("reason").GetString()!.ShouldContain("injected failure");
        switchover.GetProperty("hint").GetString()!.ShouldContain("--resume");
        var events = await scenario.Cli.RunAsync("events", "upgrade", "--output", "json");
        JsonDocument.Parse(events.Stdout).RootElement.EnumerateArray().ShouldContain(e => e.GetProperty("kind").GetString() == "switchover-stopped");
        // The endpoints had resumed before the failing step: clients are on green.
        (await BlueGreenScenario.ScalarAsync<string>(scenario.EndpointConnectionString, "SHOW server_version")).ShouldStartWith("17.");

        // The cause goes away (the fault host restarts without its fault); nothing resumes by itself.
        await scenario.Teal.KillAsync();
        scenario.Teal.Environment = new Dictionary<string, string>();
        await scenario.Teal.StartAgainAsync();
        BlueGreenScenario.Status(await scenario.ShowAsync()).ShouldBe("SWITCHOVER_STOPPED");
        (await ServerVersionOnceUpAsync(scenario)).ShouldStartWith("17.");

        var resumed = await scenario.Cli.RunAsync(["switchover", "upgrade", "--resume", "--wait"], TimeSpan.FromMinutes(2));

        resumed.ShouldSucceed();
        var completed = await scenario.ShowAsync();
        BlueGreenScenario.Status(completed).ShouldBe("SWITCHOVER_COMPLETED", completed.ToString());
        var again = await scenario.Cli.RunAsync(["switchover", "upgrade", "--resume"], TimeSpan.FromMinutes(1));
        again.ExitCode.ShouldBe(1, again.ToString());
        again.Stderr.ShouldContain("only a SWITCHOVER_STOPPED switchover can be resumed");
    }

    /// <summary>The endpoint's server version, once Teal (just restarted) has its managed green up again.</summary>
    private static async Task<string> ServerVersionOnceUpAsync(BlueGreenScenario scenario)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await BlueGreenScenario.ScalarAsync<string>(scenario.EndpointConnectionString, "SHOW server_version");
            }
            catch (Npgsql.NpgsqlException) when (attempt < 60)
            {
                await Task.Delay(1000);
            }
            catch (Npgsql.NpgsqlException ex)
            {
                throw new InvalidOperationException($"the endpoint did not serve green after the restart: {ex.Message}\n{scenario.Teal.Log}", ex);
            }
        }
    }
}
