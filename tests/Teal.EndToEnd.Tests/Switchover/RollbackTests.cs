using System.Globalization;
using System.Text.Json;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// A switchover that cannot finish before the point of no return is undone: blue writable
/// again within a second of the decision, the endpoint back on blue, replication running, and a
/// new switchover possible. Faults come from the test-only host (<c>tests/Teal.FaultHost</c>).
/// </summary>
public sealed class RollbackTests
{
    private static string FaultHost => RepoPaths.Built("tests/Teal.FaultHost", "Teal.FaultHost.dll");

    [Fact]
    public async Task Switchover_TimeoutThatCannotBeMet_RollsBackAndBlueServesAgain()
    {
        // catch-up is held for longer than the shortest timeout allowed: the timeout must fire.
        await using var scenario = await BlueGreenScenario.StartAsync(tealEntry: FaultHost, tealEnvironment: new Dictionary<string, string> { ["TEAL_FAULT"] = "delay:catch-up:40" });
        var created = await scenario.CreateDeploymentAsync();

        var result = await scenario.Cli.RunAsync(["switchover", "upgrade", "--switchover-timeout", "30", "--wait"], TimeSpan.FromMinutes(2));

        result.ExitCode.ShouldBe(1, result.ToString());
        result.Stderr.ShouldContain("timeout");
        var deployment = await scenario.ShowAsync();
        BlueGreenScenario.Status(deployment).ShouldBe("SWITCHOVER_FAILED", deployment.ToString());
        deployment.GetProperty("switchover").GetProperty("reason").GetString()!.ShouldContain("timeout of 30 s");
        await AssertRolledBackAsync(scenario);
        // The slot and publication made on green before the pause for replication back to blue left with the rollback.
        var greenAsTeal = await scenario.InstanceUrlAsync(created.GetProperty("green").GetString()!, asTeal: true);
        (await BlueGreenScenario.ScalarAsync<long>(greenAsTeal, "SELECT (SELECT count(*) FROM pg_replication_slots) + (SELECT count(*) FROM pg_publication)")).ShouldBe(0);
    }

    [Fact]
    public async Task Switchover_GreenStoppedMidway_RollsBackAndASecondSwitchoverSucceeds()
    {
        // catch-up waits 10 s first: the window in which the test sees the phase and stops green
        // (3 s was once too short under the full suite's load: green was still up when catch-up ran).
        await using var scenario = await BlueGreenScenario.StartAsync(tealEntry: FaultHost, tealEnvironment: new Dictionary<string, string> { ["TEAL_FAULT"] = "delay:catch-up:10" });
        var created = await scenario.CreateDeploymentAsync();
        var greenName = created.GetProperty("green").GetString()!;
        // Green is fenced: only Teal's own login gets in (to find its data directory).
        var greenUrl = await scenario.InstanceUrlAsync(greenName, asTeal: true);

        var switchover = scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(2));
        await scenario.WaitForPhaseAsync("catch-up");
        await BlueGreenScenario.StopServerAsync(greenUrl);
        var result = await switchover;

        result.ExitCode.ShouldBe(1, result.ToString());
        var deployment = await scenario.ShowAsync();
        BlueGreenScenario.Status(deployment).ShouldBe("SWITCHOVER_FAILED", deployment.ToString());
        deployment.GetProperty("switchover").GetProperty("reason").GetString()!.ShouldContain("catch-up");
        await AssertRolledBackAsync(scenario);
        // The slot for replication back to blue, made on green before the pause, could not be
        // dropped with green down: the rollback went on and said so.
        var events = await scenario.Cli.RunAsync("events", "upgrade");
        events.Stdout.ShouldContain("could not be dropped from green");

        // Green is still down: a new switchover is a refusal naming green, not an internal error.
        var refused = await scenario.Cli.RunAsync(["switchover", "upgrade"], TimeSpan.FromMinutes(1));
        refused.ExitCode.ShouldBe(1, refused.ToString());
        refused.Stderr.ShouldContain("green");
        refused.Stderr.ShouldContain("hint:");
        BlueGreenScenario.Status(await scenario.ShowAsync()).ShouldBe("SWITCHOVER_FAILED");

        // Teal starts its managed green again when it restarts; then a new switchover goes through.
        await scenario.Teal.KillAsync();
        scenario.Teal.Environment = new Dictionary<string, string>();
        await scenario.Teal.StartAgainAsync();
        await scenario.WaitForReplicationAsync("upgrade", TimeSpan.FromMinutes(1));
        // It uses the slot left on green, moved on past what green applied since.
        (await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(2))).ShouldSucceed();
        BlueGreenScenario.Status(await scenario.ShowAsync()).ShouldBe("SWITCHOVER_COMPLETED");
    }

    private static async Task AssertRolledBackAsync(BlueGreenScenario scenario)
    {
        // Blue writable, reached through the endpoint, which routes to blue again.
        (await BlueGreenScenario.AcceptsWritesAsync(scenario.Blue.ConnectionString(BlueGreenScenario.Database))).ShouldBeTrue();
        (await BlueGreenScenario.ScalarAsync<string>(scenario.EndpointConnectionString, "SHOW server_version")).ShouldStartWith("15.");
        (await BlueGreenScenario.AcceptsWritesAsync(scenario.EndpointConnectionString)).ShouldBeTrue();

        // Blue was writable again within a second of the decision to roll back.
        var events = await scenario.Cli.RunAsync("events", "upgrade", "--output", "json");
        events.ShouldSucceed();
        var canceled = JsonDocument.Parse(events.Stdout).RootElement.EnumerateArray()
            .Last(e => e.GetProperty("kind").GetString() == "switchover-canceled");
        var writableMs = double.Parse(canceled.GetProperty("data").GetProperty("blueWritableMilliseconds").GetString()!, CultureInfo.InvariantCulture);
        writableMs.ShouldBeLessThan(1000);
    }
}
