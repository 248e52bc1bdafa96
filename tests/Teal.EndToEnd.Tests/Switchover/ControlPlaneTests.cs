using System.Net.Sockets;
using Teal.Postgres.Instances;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// One control plane per data directory, one switchover per deployment: a second <c>teal serve</c>
/// on the same directory refuses (also mid-switchover, where it would otherwise roll back what the
/// first is flipping), and of two concurrent <c>teal switchover</c> calls exactly one runs.
/// </summary>
public sealed class ControlPlaneTests
{
    private static string FaultHost => RepoPaths.Built("tests/Teal.FaultHost", "Teal.FaultHost.dll");

    [Fact]
    public async Task SecondServe_SameDataDirectory_RefusesNamingTheFirst_AndTheLockDiesWithTheFirst()
    {
        await using var first = await TealProcess.StartAsync();
        var port = ManagedPostgres.FreePort();

        var refused = await TealProcess.ServeOnceAsync(first.DataDirectory, port, TimeSpan.FromSeconds(60));

        AssertRefused(refused, first);
        ListensOn(port).ShouldBeFalse("the second teal serve must bind nothing");

        // kill -9 of the first: the kernel frees the lock, and the next start goes through.
        await first.KillAsync();
        await first.StartAgainAsync();
        first.Running.ShouldBeTrue();
    }

    [Fact]
    public async Task MidSwitchover_ConcurrentSwitchoverAndSecondServe_AreRefused_AndTheFirstFinishes()
    {
        // catch-up waits 15 s first: the switchover is surely still running while the test acts.
        await using var scenario = await BlueGreenScenario.StartAsync(tealEntry: FaultHost, tealEnvironment: new Dictionary<string, string> { ["TEAL_FAULT"] = "delay:catch-up:15" });
        var created = await scenario.CreateDeploymentAsync();
        var greenUrl = await scenario.InstanceUrlAsync(created.GetProperty("green").GetString()!);
        var blueUrl = scenario.Blue.ConnectionString(BlueGreenScenario.Database);

        var results = await Task.WhenAll(
            scenario.Cli.RunAsync(["switchover", "upgrade"], TimeSpan.FromMinutes(1)),
            scenario.Cli.RunAsync(["switchover", "upgrade"], TimeSpan.FromMinutes(1)));

        results.Count(r => r.ExitCode == 0).ShouldBe(1, string.Join("\n---\n", results.Select(r => r.ToString())));
        var other = results.Single(r => r.ExitCode != 0);
        other.ExitCode.ShouldBe(1, other.ToString());
        other.Stderr.ShouldMatch("already running|SWITCHOVER_IN_PROGRESS");

        await scenario.WaitForPhaseAsync("catch-up");
        var port = ManagedPostgres.FreePort();
        var refused = await TealProcess.ServeOnceAsync(scenario.Teal.DataDirectory, port, TimeSpan.FromSeconds(60));
        AssertRefused(refused, scenario.Teal);
        ListensOn(port).ShouldBeFalse();
        var again = await scenario.Cli.RunAsync(["switchover", "upgrade"], TimeSpan.FromMinutes(1));
        again.ExitCode.ShouldBe(1, again.ToString());

        var deployment = await scenario.WaitForStatusAsync("upgrade", TimeSpan.FromMinutes(2), "SWITCHOVER_COMPLETED", "SWITCHOVER_FAILED");
        BlueGreenScenario.Status(deployment).ShouldBe("SWITCHOVER_COMPLETED", deployment.ToString());
        (await BlueGreenScenario.AcceptsWritesAsync(greenUrl)).ShouldBeTrue();
        (await BlueGreenScenario.AcceptsWritesAsync(blueUrl)).ShouldBeFalse();
        (await BlueGreenScenario.ScalarAsync<string>(scenario.EndpointConnectionString, "SHOW server_version")).ShouldStartWith("17.");
    }

    private static void AssertRefused(CliResult refused, TealProcess first)
    {
        refused.ExitCode.ShouldBe(1, refused.ToString());
        var error = refused.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        error[0].ShouldStartWith("error: another teal serve", customMessage: refused.ToString());
        error[0].ShouldContain($"pid {first.Pid}");
        error[0].ShouldContain($"127.0.0.1:{first.Port}");
        refused.Stderr.ShouldNotContain("   at ", customMessage: "one line and a hint, no stack trace");
    }

    private static bool ListensOn(int port)
    {
        using var client = new TcpClient();
        try
        {
            client.Connect("127.0.0.1", port);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
