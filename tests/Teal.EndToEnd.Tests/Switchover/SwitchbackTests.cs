using System.Text.Json;
using Npgsql;
using Teal.Testing.Load;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// The way back (PRODUCT.md §7): after a switchover green's writes replicate to the old blue,
/// which stays fenced for clients; <c>teal switchback</c> returns to it without losing a write,
/// with the names given back and replication running forward again, so the pair can be
/// switched over again; <c>teal finish</c> ends it and leaves nothing of Teal's on either side.
/// A probe writes through the endpoint the whole time.
/// </summary>
public sealed class SwitchbackTests
{
    [Fact]
    public async Task SwitchoverSwitchbackSwitchover_UnderProbeLoad_LosesNoWrite_AndFinishLeavesNothing()
    {
        await using var scenario = await BlueGreenScenario.StartAsync();
        var created = await scenario.CreateDeploymentAsync();
        var greenName = created.GetProperty("green").GetString()!;
        // Unpooled: every cutover closes the endpoint's connections between transactions.
        var endpoint = new NpgsqlConnectionStringBuilder(scenario.EndpointConnectionString) { Pooling = false }.ConnectionString;

        await using var probe = new ProbeWriter(scenario.EndpointConnectionString);
        probe.Start();
        await Task.Delay(TimeSpan.FromSeconds(2));

        // 1. Switchover: green is production, and replicates back to the old blue.
        (await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(2))).ShouldSucceed();
        var switched = await scenario.ShowAsync();
        BlueGreenScenario.Status(switched).ShouldBe("SWITCHOVER_COMPLETED", switched.ToString());
        State(switched).ShouldBe("REVERSE_REPLICATING", switched.ToString());
        switched.GetProperty("blue").GetString().ShouldBe("app-old1");
        switched.GetProperty("green").GetString().ShouldBe("app");
        (await BlueGreenScenario.ScalarAsync<string>(endpoint, "SHOW server_version")).ShouldStartWith("17.");
        var events = await EventKindsAsync(scenario);
        events.ShouldContain("reverse-replication-started");

        // Writes made on green reach the old blue, which applies them while no client can log
        // in to it (the fence's read-only default does not stop the apply worker).
        await Task.Delay(TimeSpan.FromSeconds(2));
        var oldBlueAsTeal = await scenario.InstanceUrlAsync("app-old1", asTeal: true);
        await WaitForRowsAsync(oldBlueAsTeal, probe.Acknowledged);
        (await BlueGreenScenario.AcceptsWritesAsync(await scenario.InstanceUrlAsync("app-old1"))).ShouldBeFalse();
        // The fence's second layer is in force on the old blue while its apply worker writes.
        (await BlueGreenScenario.ScalarAsync<string>(oldBlueAsTeal, "SELECT setting FROM pg_file_settings WHERE name = 'default_transaction_read_only' AND applied")).ShouldBe("on");
        var unfence = await scenario.Cli.RunAsync("instance", "unfence", "app-old1");
        unfence.ExitCode.ShouldBe(1, unfence.ToString());
        unfence.Stderr.ShouldContain("teal finish upgrade");

        // Lag of the reverse direction is shown once the monitor has read it.
        var withLag = await WaitForAsync(scenario, d => State(d) == "REVERSE_REPLICATING" && d.GetProperty("replication").TryGetProperty("lagBytes", out var lag) && lag.ValueKind == JsonValueKind.Number);
        withLag.GetProperty("replication").GetProperty("lagSeconds").ValueKind.ShouldBe(JsonValueKind.Number, withLag.ToString());
        var human = await scenario.Cli.RunAsync("show", "upgrade");
        human.Stdout.ShouldContain("REVERSE_REPLICATING");

        // A second switchover is refused: the way on is a switchback or finish.
        var again = await scenario.Cli.RunAsync(["switchover", "upgrade"], TimeSpan.FromMinutes(1));
        again.ExitCode.ShouldBe(1, again.ToString());

        // 2. Switchback: the old blue takes production's name back, green its own; nothing
        // acknowledged on green is missing on blue; forward replication runs again.
        var dry = await scenario.Cli.RunAsync(["switchback", "upgrade", "--dry-run"], TimeSpan.FromMinutes(1));
        dry.ShouldSucceed();
        dry.Stdout.ShouldContain("start-reverse-replication");
        var back = await scenario.Cli.RunAsync(["switchback", "upgrade", "--wait"], TimeSpan.FromMinutes(2));
        back.ShouldSucceed();
        back.Stdout.ShouldContain("switchback completed");
        var returned = await scenario.ShowAsync();
        BlueGreenScenario.Status(returned).ShouldBe("AVAILABLE", returned.ToString());
        returned.GetProperty("blue").GetString().ShouldBe("app");
        returned.GetProperty("green").GetString().ShouldBe(greenName);
        (await BlueGreenScenario.ScalarAsync<string>(endpoint, "SHOW server_version")).ShouldStartWith("15.");
        await Task.Delay(TimeSpan.FromSeconds(2));
        var blueAsTeal = await scenario.InstanceUrlAsync("app", asTeal: true);
        await WaitForRowsAsync(blueAsTeal, probe.Acknowledged, TimeSpan.Zero);
        (await EventKindsAsync(scenario)).ShouldContain("switchback");
        // Old blue's sequences continue where green's stopped: new keys do not collide.
        await BlueGreenScenario.ExecuteAsync(endpoint, "INSERT INTO orders (note) VALUES ('after switchback')");
        // Green (fenced again) receives blue's writes through forward replication.
        await WaitForRowsAsync(await scenario.InstanceUrlAsync(greenName, asTeal: true), probe.Acknowledged);
        (await BlueGreenScenario.AcceptsWritesAsync(await scenario.InstanceUrlAsync(greenName))).ShouldBeFalse();
        await scenario.WaitForReplicationAsync("upgrade", TimeSpan.FromSeconds(60));

        // 3. Switchover again, on the same pair.
        (await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(2))).ShouldSucceed();
        var second = await scenario.ShowAsync();
        BlueGreenScenario.Status(second).ShouldBe("SWITCHOVER_COMPLETED", second.ToString());
        State(second).ShouldBe("REVERSE_REPLICATING", second.ToString());
        second.GetProperty("blue").GetString().ShouldBe("app-old1");
        (await BlueGreenScenario.ScalarAsync<string>(endpoint, "SHOW server_version")).ShouldStartWith("17.");
        await Task.Delay(TimeSpan.FromSeconds(2));
        await probe.StopAsync();
        var acked = probe.Acknowledged;
        acked.Count.ShouldBeGreaterThan(200, string.Join("\n", probe.Errors.TakeLast(5)));
        await WaitForRowsAsync(await scenario.InstanceUrlAsync("app", asTeal: true), acked, TimeSpan.Zero);
        await WaitForRowsAsync(await scenario.InstanceUrlAsync("app-old1", asTeal: true), acked);
        (await BlueGreenScenario.ScalarAsync<long>(endpoint, "SELECT count(*) FROM orders WHERE note = 'after switchback'")).ShouldBe(1);

        // 4. Finish: nothing of Teal's on either side, the old blue fenced until unfenced.
        var finish = await scenario.Cli.RunAsync("finish", "upgrade");
        finish.ShouldSucceed();
        var finished = await scenario.ShowAsync();
        BlueGreenScenario.Status(finished).ShouldBe("SWITCHOVER_COMPLETED", finished.ToString());
        State(finished).ShouldBe("STOPPED", finished.ToString());
        var production = await scenario.InstanceUrlAsync("app", asTeal: true);
        var oldBlue = await scenario.InstanceUrlAsync("app-old1", asTeal: true);
        (await TealObjectsAsync(production)).ShouldBeEmpty();
        (await TealObjectsAsync(oldBlue)).ShouldBe(["fence holder teal_" + created.GetProperty("id").GetString()!["bgd-".Length..] + "_fence_green", "role teal_fence_logins"], ignoreOrder: true);
        (await BlueGreenScenario.AcceptsWritesAsync(await scenario.InstanceUrlAsync("app-old1"))).ShouldBeFalse();
        (await BlueGreenScenario.AcceptsWritesAsync(endpoint)).ShouldBeTrue();

        var unfenced = await scenario.Cli.RunAsync("instance", "unfence", "app-old1");
        unfenced.ShouldSucceed();
        (await TealObjectsAsync(oldBlue)).ShouldBeEmpty();
        (await BlueGreenScenario.AcceptsWritesAsync(await scenario.InstanceUrlAsync("app-old1"))).ShouldBeTrue();
        // It holds green's rows, and finish gave it green's sequences: its next key is a new one.
        (await BlueGreenScenario.ScalarAsync<long>(oldBlue, "SELECT nextval('orders_id_seq')")).ShouldBeGreaterThan(
            await BlueGreenScenario.ScalarAsync<long>(oldBlue, "SELECT max(id) FROM orders"));
    }

    [Fact]
    public async Task NoReverseReplication_SwitchoverStopsReplication_AndSwitchbackIsRefused()
    {
        await using var scenario = await BlueGreenScenario.StartAsync();
        (await scenario.Cli.RunAsync(["create", "upgrade", "--source", "app", "--target-engine-version", "17", "--no-reverse-replication", "--wait"], TimeSpan.FromMinutes(5))).ShouldSucceed();

        (await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(2))).ShouldSucceed();

        var switched = await scenario.ShowAsync();
        BlueGreenScenario.Status(switched).ShouldBe("SWITCHOVER_COMPLETED", switched.ToString());
        State(switched).ShouldBe("STOPPED", switched.ToString());
        (await EventKindsAsync(scenario)).ShouldNotContain("reverse-replication-started");
        var back = await scenario.Cli.RunAsync(["switchback", "upgrade"], TimeSpan.FromMinutes(1));
        back.ExitCode.ShouldBe(1, back.ToString());
        back.Stderr.ShouldContain("switchback refused");
        // Nothing subscribes the old blue to green, and green keeps no slot for it.
        var oldBlue = await scenario.InstanceUrlAsync("app-old1", asTeal: true);
        (await BlueGreenScenario.ScalarAsync<long>(oldBlue, "SELECT count(*) FROM pg_subscription")).ShouldBe(0);
        (await BlueGreenScenario.ScalarAsync<long>(await scenario.InstanceUrlAsync("app", asTeal: true), "SELECT count(*) FROM pg_replication_slots")).ShouldBe(0);
    }

    private static string State(JsonElement deployment) => BlueGreenScenario.Normalize(deployment.GetProperty("replication").GetProperty("state").GetString());

    private static async Task<List<string>> EventKindsAsync(BlueGreenScenario scenario)
    {
        var events = await scenario.Cli.RunAsync("events", "upgrade", "--output", "json");
        events.ShouldSucceed();
        return [.. JsonDocument.Parse(events.Stdout).RootElement.EnumerateArray().Select(e => e.GetProperty("kind").GetString()!)];
    }

    private static async Task<JsonElement> WaitForAsync(BlueGreenScenario scenario, Func<JsonElement, bool> condition)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        JsonElement deployment;
        do
        {
            deployment = await scenario.PollAsync();
            if (condition(deployment))
            {
                return deployment;
            }

            await Task.Delay(500);
        }
        while (DateTime.UtcNow < deadline);
        throw new TimeoutException($"deployment never reached the expected state: {deployment}");
    }

    /// <summary>Waits (up to 60 s, or checks once with a zero timeout) until every acknowledged probe row is on the server.</summary>
    private static async Task WaitForRowsAsync(string connectionString, IReadOnlyList<long> acknowledged, TimeSpan? timeout = null)
    {
        acknowledged.Count.ShouldBeGreaterThan(0);
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(60));
        long found;
        do
        {
            await using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false }.ConnectionString);
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand($"SELECT count(*) FROM {ProbeWriter.Table} WHERE n = ANY($1)", connection) { Parameters = { new() { Value = acknowledged.ToArray() } } };
            found = (long)(await command.ExecuteScalarAsync())!;
            if (found == acknowledged.Count)
            {
                return;
            }

            await Task.Delay(250);
        }
        while (DateTime.UtcNow < deadline);
        found.ShouldBe(acknowledged.Count, $"acknowledged probe rows missing on {new NpgsqlConnectionStringBuilder(connectionString).Port}");
    }

    /// <summary>Everything of Teal's on a server: publications, subscriptions, slots, the teal schema, event triggers, Teal's roles (its login aside).</summary>
    private static async Task<List<string>> TealObjectsAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false }.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            """
            SELECT 'publication ' || pubname FROM pg_publication
            UNION ALL SELECT 'subscription ' || subname FROM pg_subscription
            UNION ALL SELECT 'slot ' || slot_name FROM pg_replication_slots
            UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname = 'teal'
            UNION ALL SELECT 'event trigger ' || evtname FROM pg_event_trigger
            UNION ALL SELECT CASE WHEN rolname = 'teal_fence_logins' THEN 'role ' ELSE 'fence holder ' END || rolname FROM pg_roles WHERE rolname LIKE 'teal\_%' AND rolname <> 'teal_control'
            """,
            connection);
        await using var reader = await command.ExecuteReaderAsync();
        var found = new List<string>();
        while (await reader.ReadAsync())
        {
            found.Add(reader.GetString(0));
        }

        return found;
    }
}
