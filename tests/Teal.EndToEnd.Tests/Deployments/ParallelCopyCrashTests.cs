using Npgsql;
using Teal.Testing.Load;

namespace Teal.EndToEnd.Tests.Deployments;

/// <summary>
/// <c>kill -9</c> of <c>teal serve</c> in the middle of a parallel initial copy, with a client
/// writing through the endpoint all along: the restarted Teal starts the copy over from a new
/// snapshot (the exported one died with the killed process), and the deployment becomes
/// AVAILABLE with green equal to blue: nothing of the half copy left, no row doubled or lost.
/// </summary>
public sealed class ParallelCopyCrashTests
{
    [Fact]
    public async Task KillDuringParallelCopy_RestartCopiesOver_GreenEqualsBlue()
    {
        // Chunks of 1 MB: pgbench's accounts are copied in dozens of ranges.
        var environment = new Dictionary<string, string> { ["TEAL_COPY_CHUNK_BYTES"] = "1048576" };
        await using var scenario = await BlueGreenScenario.StartAsync(pgbenchScale: 5, tealEnvironment: environment);
        // Enough rows (about 150 MB) that the copy runs for a while.
        await scenario.Blue.ExecuteAsync("CREATE TABLE wide (id bigint PRIMARY KEY, payload text NOT NULL); INSERT INTO wide SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, 600000) g", BlueGreenScenario.Database);
        await using var probe = new ProbeWriter(scenario.EndpointConnectionString);
        probe.Start();

        // Watched from blue, where the copy's sessions read: the CLI alone takes seconds to start.
        await using (var blue = new NpgsqlConnection(scenario.Blue.ConnectionString(BlueGreenScenario.Database)))
        {
            await blue.OpenAsync();
            var create = scenario.Cli.RunAsync(["create", "upgrade", "--source", "app", "--target-engine-version", "17", "--copy-parallelism", "2"], TimeSpan.FromMinutes(3));
            await using var copying = new NpgsqlCommand("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'teal copy %' AND query LIKE 'COPY%' AND state = 'active'", blue);
            var deadline = DateTime.UtcNow.AddMinutes(4);
            while ((long)(await copying.ExecuteScalarAsync())! == 0)
            {
                if (DateTime.UtcNow > deadline)
                {
                    throw new TimeoutException($"the parallel copy never got under way: {await scenario.ShowAsync()}\n{scenario.Teal.Log}");
                }

                await Task.Delay(20);
            }

            (await create).ShouldSucceed();
            await scenario.Teal.KillAsync();
            // The killed copy's slot stays on blue, its snapshot gone with the process.
            await using var slots = new NpgsqlCommand("SELECT count(*) FROM pg_replication_slots", blue);
            ((long)(await slots.ExecuteScalarAsync())!).ShouldBe(1);
        }

        scenario.Teal.Environment = environment;
        await scenario.Teal.StartAgainAsync();
        var deployment = await scenario.WaitForStatusAsync("upgrade", TimeSpan.FromMinutes(5), "AVAILABLE", "INVALID_CONFIGURATION");
        var greenAsTeal = await scenario.InstanceUrlAsync(deployment.GetProperty("green").GetString()!, asTeal: true);
        BlueGreenScenario.Status(deployment).ShouldBe("AVAILABLE", deployment.ToString());
        await Task.Delay(500);
        await probe.StopAsync();

        (await scenario.Cli.RunAsync(["verify", "upgrade"], TimeSpan.FromMinutes(3))).ShouldSucceed();
        (await BlueGreenScenario.ScalarAsync<long>(greenAsTeal, "SELECT count(*) FROM wide")).ShouldBe(600_000);
        (await BlueGreenScenario.ScalarAsync<long>(greenAsTeal, "SELECT count(*) FROM pgbench_accounts")).ShouldBe(500_000);
        (await BlueGreenScenario.ScalarAsync<long>(greenAsTeal, "SELECT count(*) FROM pg_indexes WHERE tablename = 'pgbench_accounts'")).ShouldBe(1);
        var acked = probe.Acknowledged;
        acked.Count.ShouldBeGreaterThan(0);
        var blueUrl = scenario.Blue.ConnectionString(BlueGreenScenario.Database);
        await LinkUpAsync(greenAsTeal, blueUrl);
        await using var connection = new NpgsqlConnection(greenAsTeal);
        await connection.OpenAsync();
        await using var count = new NpgsqlCommand($"SELECT count(*) FROM {ProbeWriter.Table} WHERE n = ANY($1)", connection) { Parameters = { new() { Value = acked.ToArray() } } };
        ((long)(await count.ExecuteScalarAsync())!).ShouldBe(acked.Count, "acknowledged probe rows missing on green");
    }

    /// <summary>Waits until green has every probe row blue has (replication catches up after the probe stopped).</summary>
    private static async Task LinkUpAsync(string green, string blue)
    {
        var expected = await BlueGreenScenario.ScalarAsync<long>(blue, $"SELECT count(*) FROM {ProbeWriter.Table}");
        var deadline = DateTime.UtcNow.AddMinutes(1);
        while (await BlueGreenScenario.ScalarAsync<long>(green, $"SELECT count(*) FROM {ProbeWriter.Table}") != expected)
        {
            DateTime.UtcNow.ShouldBeLessThan(deadline, "green did not catch up with blue's probe rows");
            await Task.Delay(100);
        }
    }
}
