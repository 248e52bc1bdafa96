using System.Globalization;
using System.Text.Json;
using Npgsql;
using Teal.Testing;
using Teal.Testing.Load;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// The cutover behind a PgBouncer the operator runs (transaction pooling): Teal drives it through
/// its admin console (PAUSE, repoint the ini, RELOAD, RESUME) while a probe and pgbench write
/// through it. Clients must see no error, nothing acknowledged may be lost, old blue must refuse
/// writes and new rows must get keys green has not used.
/// </summary>
public sealed class PgBouncerSwitchoverTests
{
    [Fact]
    public async Task Switchover_ThroughPgBouncerUnderLoad_ClientsSeeNoErrorAndNothingIsLost()
    {
        await using var scenario = await BlueGreenScenario.StartAsync();
        // Before the deployment, so green gets PgBouncer's login role too (Teal copies roles).
        await using var bouncer = await PgBouncerServer.StartAsync(scenario.Blue, new PgBouncerServerOptions { TargetDatabase = BlueGreenScenario.Database });
        var environment = new Dictionary<string, string> { ["TEAL_PGBOUNCER_PASSWORD"] = bouncer.AdminPassword };
        (await scenario.Cli.RunAsync(
            [
                "endpoint", "add", "bouncer", "--instance", "app",
                "--pgbouncer", $"{bouncer.Host}:{bouncer.Port.ToString(CultureInfo.InvariantCulture)}",
                "--admin-user", PgBouncerServer.AdminUser, "--database", PgBouncerServer.Database, "--config", bouncer.ConfigFile,
            ],
            TimeSpan.FromMinutes(1),
            environment)).ShouldSucceed();
        await scenario.CreateDeploymentAsync();
        (await BlueGreenScenario.ScalarAsync<string>(bouncer.ConnectionString(), "SHOW server_version")).ShouldStartWith("15.");

        await using var probe = new ProbeWriter(bouncer.ConnectionString());
        probe.Start();
        // No -C: pgbench keeps its 8 connections to PgBouncer, which holds them through the pause.
        var load = PgBench.TpcbAsync(bouncer.Host, bouncer.Port, bouncer.AppUser, bouncer.AppPassword, PgBouncerServer.Database, clients: 8, TimeSpan.FromSeconds(12), connectPerTransaction: false);
        await Task.Delay(TimeSpan.FromSeconds(3));

        var switchover = await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait", "--output", "json"], TimeSpan.FromMinutes(2));
        switchover.ShouldSucceed();
        var ackedAtSwitchover = probe.Acknowledged.Count;
        await Task.Delay(TimeSpan.FromSeconds(2));
        await probe.StopAsync();
        var bench = await load;

        var deployment = await scenario.ShowAsync();
        BlueGreenScenario.Status(deployment).ShouldBe("SWITCHOVER_COMPLETED", deployment.ToString());
        deployment.GetProperty("blue").GetString().ShouldBe("app-old1");
        deployment.GetProperty("green").GetString().ShouldBe("app");

        // Clients through PgBouncer saw no error.
        probe.Errors.ShouldBeEmpty(string.Join("\n", probe.Errors.Take(5)) + "\n" + await bouncer.ReadLogAsync());
        bench.ExitCode.ShouldBe(0, bench.Output);
        bench.AbortedClients.ShouldBe(0, bench.Output);
        bench.Processed.ShouldBeGreaterThan(0, bench.Output);

        // Every acknowledged probe row is on green; the probe kept writing after the switchover.
        var green = new NpgsqlConnectionStringBuilder(await scenario.InstanceUrlAsync("app")) { Pooling = false }.ConnectionString;
        (await BlueGreenScenario.ScalarAsync<string>(green, "SHOW server_version")).ShouldStartWith("17.");
        var acked = probe.Acknowledged;
        acked.Count.ShouldBeGreaterThan(100);
        acked.Count.ShouldBeGreaterThan(ackedAtSwitchover);
        await using (var connection = new NpgsqlConnection(green))
        {
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand($"SELECT count(*) FROM {ProbeWriter.Table} WHERE n = ANY($1)", connection) { Parameters = { new() { Value = acked.ToArray() } } };
            ((long)(await command.ExecuteScalarAsync())!).ShouldBe(acked.Count);
        }

        (await BlueGreenScenario.ScalarAsync<long>(green, "SELECT count(*) FROM pgbench_history")).ShouldBeGreaterThanOrEqualTo(bench.Processed, bench.Output);

        // Old blue refuses writes, for its superuser too.
        var oldBlue = new NpgsqlConnectionStringBuilder(await scenario.InstanceUrlAsync("app-old1")) { Pooling = false }.ConnectionString;
        var refused = await Should.ThrowAsync<PostgresException>(() => BlueGreenScenario.ExecuteAsync(oldBlue, "INSERT INTO orders (note) VALUES ('after, on old blue')"));
        // The fence took LOGIN from every role but Teal's: the superuser cannot even log in.
        refused.SqlState.ShouldBe(PostgresErrorCodes.InvalidAuthorizationSpecification);

        // PgBouncer's ini now sends appdb to green; the other entry is untouched.
        var greenPort = new NpgsqlConnectionStringBuilder(green).Port;
        var ini = await File.ReadAllTextAsync(bouncer.ConfigFile);
        var entry = ini.Split('\n').Single(line => line.StartsWith(PgBouncerServer.Database + " ", StringComparison.Ordinal));
        entry.ShouldContain($"port={greenPort.ToString(CultureInfo.InvariantCulture)}", Case.Sensitive, ini);
        ini.ShouldContain(PgBouncerServer.EntryLine(PgBouncerServer.OtherDatabase, scenario.Blue, BlueGreenScenario.Database) + " pool_size=5");

        // Sequences were synced: new rows through PgBouncer land on green with fresh keys.
        await BlueGreenScenario.ExecuteAsync(bouncer.ConnectionString(), "INSERT INTO orders (note) SELECT 'after ' || g FROM generate_series(1, 10) g");
        (await BlueGreenScenario.ScalarAsync<long>(bouncer.ConnectionString(), "SELECT max(id) FROM orders")).ShouldBe(510);
        (await BlueGreenScenario.ScalarAsync<string>(bouncer.ConnectionString(), "SHOW server_version")).ShouldStartWith("17.");

        // Guardrail "deployment AVAILABLE": after a completed switchover both check and switchover refuse.
        var check = await scenario.Cli.RunAsync("check", "upgrade", "--output", "json");
        check.ExitCode.ShouldBe(1, check.ToString());
        var available = JsonDocument.Parse(check.Stdout).RootElement.GetProperty("results").EnumerateArray().Single(r => r.GetProperty("name").GetString() == "deployment-available");
        available.GetProperty("message").GetString()!.ShouldContain("SWITCHOVER_COMPLETED, not AVAILABLE");
        available.GetProperty("hint").GetString()!.ShouldContain("wait until `teal show` says AVAILABLE");
        var again = await scenario.Cli.RunAsync("switchover", "upgrade");
        again.ExitCode.ShouldBe(1, again.ToString());
        BlueGreenScenario.Status(await scenario.ShowAsync()).ShouldBe("SWITCHOVER_COMPLETED");
    }
}
