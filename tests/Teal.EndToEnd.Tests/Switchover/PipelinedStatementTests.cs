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
        await using var client = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(scenario.EndpointConnectionString) { ApplicationName = name }.ConnectionString);
        await client.OpenAsync();

        // A Sync after each statement: two transactions, sent together. The second waits in
        // blue's backend until the first's five seconds are over, well into the switchover.
        await using var pipeline = new NpgsqlBatch(client) { EnableErrorBarriers = true };
        pipeline.BatchCommands.Add(new NpgsqlBatchCommand("SELECT pg_sleep(5)"));
        pipeline.BatchCommands.Add(new NpgsqlBatchCommand("INSERT INTO orders (note) VALUES ('sent before the pause, behind a sleep')"));
        var running = pipeline.ExecuteNonQueryAsync();
        await WaitUntilSleepingAsync(scenario.Blue.ConnectionString(BlueGreenScenario.Database), name);

        var switchover = await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait", "--drain-budget", "20"], TimeSpan.FromMinutes(2));
        (await running).ShouldBe(1, "the statement queued behind the sleep ran writable on blue");
        switchover.ShouldSucceed();
        // The pause began while the sleep ran: the endpoints' drain waited for the pipeline.
        var deployment = await scenario.ShowAsync();
        var drain = deployment.GetProperty("switchover").GetProperty("phases").EnumerateArray().Single(p => p.GetProperty("step").GetString() == "drain-endpoints");
        (drain.GetProperty("milliseconds").GetDouble() > 500).ShouldBeTrue($"the drain did not wait for the pipeline: {deployment}");

        var green = await scenario.InstanceUrlAsync("app");
        (await BlueGreenScenario.ScalarAsync<long>(green, "SELECT count(*) FROM orders WHERE note = 'sent before the pause, behind a sleep'")).ShouldBe(1);
        await using var version = new NpgsqlCommand("SHOW server_version", client);
        ((string)(await version.ExecuteScalarAsync())!).ShouldStartWith("17.", customMessage: "the session moved to green once its pipeline was done");
    }

    private static async Task WaitUntilSleepingAsync(string blue, string name)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(3);
        while (await BlueGreenScenario.ScalarAsync<long>(blue, $"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{name}' AND query LIKE 'SELECT pg_sleep%' AND state = 'active'") == 0)
        {
            DateTime.UtcNow.ShouldBeLessThan(deadline, "the first statement of the pipeline never ran on blue");
            await Task.Delay(20);
        }
    }
}
