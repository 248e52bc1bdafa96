using Npgsql;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// Why blue is fenced only once the endpoints have drained. A client may send statements ahead
/// (a pipeline, each statement its own transaction); the proxy forwards them as they come, and
/// blue's backend starts each one only when it reads it. PostgreSQL's fence makes a transaction
/// read-only when it starts, so a fence that took effect while a forwarded statement still
/// waited in the backend's queue would fail it with 25006, a client error, though the client
/// sent it before the pause. Running the fence beside the drain was tried: this test (and a
/// probe at a rollback) caught it.
/// </summary>
public sealed class PipelinedStatementTests
{
    [Fact]
    public async Task StatementForwardedBeforeThePause_QueuedBehindAnotherOnBlue_RunsWritable_AndReachesGreen()
    {
        await using var scenario = await BlueGreenScenario.StartAsync();
        await scenario.CreateDeploymentAsync();
        var name = $"pipelined-{Guid.NewGuid():N}"[..20];
        var blue = scenario.Blue.ConnectionString(BlueGreenScenario.Database);
        await using var client = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(scenario.EndpointConnectionString) { ApplicationName = name }.ConnectionString);
        await client.OpenAsync();

        // The pipeline's first statement waits for a lock the test holds on blue until the
        // endpoints' drain is under way: not a fixed sleep, which a slow machine's switchover
        // preparation can outlast (it once began its pause after a 5 s sleep had ended).
        await using var holder = new NpgsqlConnection(blue);
        await holder.OpenAsync();
        await using (var take = new NpgsqlCommand("SELECT pg_advisory_lock(4242)", holder))
        {
            await take.ExecuteNonQueryAsync();
        }

        // A Sync after each statement: two transactions, sent together. The second waits in
        // blue's backend until the first has its lock, well into the switchover.
        await using var pipeline = new NpgsqlBatch(client) { EnableErrorBarriers = true };
        pipeline.BatchCommands.Add(new NpgsqlBatchCommand("SELECT pg_advisory_xact_lock(4242)"));
        pipeline.BatchCommands.Add(new NpgsqlBatchCommand("INSERT INTO orders (note) VALUES ('sent before the pause, behind a lock wait')"));
        var running = pipeline.ExecuteNonQueryAsync();
        await WaitUntilWaitingAsync(blue, name);

        var switchover = scenario.Cli.RunAsync(["switchover", "upgrade", "--wait", "--drain-budget", "20"], TimeSpan.FromMinutes(2));
        await scenario.WaitForPhaseAsync("drain-endpoints");
        await Task.Delay(TimeSpan.FromSeconds(1));
        await using (var release = new NpgsqlCommand("SELECT pg_advisory_unlock(4242)", holder))
        {
            await release.ExecuteNonQueryAsync();
        }

        // Gone before the fence's drain of blue ends it.
        await holder.CloseAsync();
        (await running).ShouldBe(1, "the statement queued behind the lock wait ran writable on blue");
        (await switchover).ShouldSucceed();
        // The pause began while the first statement waited: the endpoints' drain waited for the pipeline.
        var deployment = await scenario.ShowAsync();
        var drain = deployment.GetProperty("switchover").GetProperty("phases").EnumerateArray().Single(p => p.GetProperty("step").GetString() == "drain-endpoints");
        (drain.GetProperty("milliseconds").GetDouble() > 500).ShouldBeTrue($"the drain did not wait for the pipeline: {deployment}");

        var green = await scenario.InstanceUrlAsync("app");
        (await BlueGreenScenario.ScalarAsync<long>(green, "SELECT count(*) FROM orders WHERE note = 'sent before the pause, behind a lock wait'")).ShouldBe(1);
        await using var version = new NpgsqlCommand("SHOW server_version", client);
        ((string)(await version.ExecuteScalarAsync())!).ShouldStartWith("17.", customMessage: "the session moved to green once its pipeline was done");
    }

    private static async Task WaitUntilWaitingAsync(string blue, string name)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (await BlueGreenScenario.ScalarAsync<long>(blue, $"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{name}' AND query LIKE 'SELECT pg_advisory_xact_lock%' AND wait_event_type = 'Lock'") == 0)
        {
            DateTime.UtcNow.ShouldBeLessThan(deadline, "the first statement of the pipeline never waited on blue");
            await Task.Delay(20);
        }
    }
}
