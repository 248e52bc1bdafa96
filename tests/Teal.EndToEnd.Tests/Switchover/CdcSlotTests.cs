using System.Text.Json;
using Npgsql;
using Teal.Testing.Load;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// CDC consumers follow the cutovers (PRODUCT.md §7): each reads its slot on the side left up
/// to that side's final position, then the slot of the same name Teal made on the side opened,
/// and sees every committed change of a write load that ran across a switchover and a
/// switchback exactly once. Blue runs PostgreSQL 15, green 17 (pg_recvlogical is 15's).
/// </summary>
public sealed class CdcSlotTests
{
    private const string Publication = "cdc_pub";

    [Fact]
    public async Task TestDecodingAndPgOutputConsumers_AcrossSwitchoverAndSwitchback_SeeEveryCommittedRowOnce()
    {
        await using var scenario = await BlueGreenScenario.StartAsync();
        await scenario.Blue.ExecuteAsync($"CREATE PUBLICATION {Publication} FOR TABLE {ProbeWriter.Table}", BlueGreenScenario.Database);
        await scenario.Blue.ExecuteAsync("SELECT pg_create_logical_replication_slot('cdc_td', 'test_decoding')", BlueGreenScenario.Database);
        await scenario.Blue.ExecuteAsync("SELECT pg_create_logical_replication_slot('cdc_po', 'pgoutput')", BlueGreenScenario.Database);

        (await scenario.Cli.RunAsync(["create", "upgrade", "--source", "app", "--target-engine-version", "17", "--cdc-slot", "cdc_td", "--cdc-slot", "cdc_po", "--wait"], TimeSpan.FromMinutes(5))).ShouldSucceed();
        var greenName = (await scenario.ShowAsync()).GetProperty("green").GetString()!;

        await using var probe = new ProbeWriter(scenario.EndpointConnectionString);
        probe.Start();
        await Task.Delay(TimeSpan.FromSeconds(2));

        // Nobody consumed the slots yet: the check names each with its lag, and does not refuse.
        var check = await scenario.Cli.RunAsync(["check", "upgrade"], TimeSpan.FromMinutes(1));
        check.Stdout.ShouldContain("cdc_td", customMessage: check.ToString());
        check.Stdout.ShouldContain("bytes behind", customMessage: check.ToString());
        var shown = await scenario.Cli.RunAsync("show", "upgrade");
        shown.Stdout.ShouldContain("cdc slots    cdc_td, cdc_po", customMessage: shown.ToString());

        // 1. Switchover: slots of the same names on green, from before its first write.
        (await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(2))).ShouldSucceed();
        var switchover = (await CdcEventsAsync(scenario)).ShouldHaveSingleItem();
        var blueFinal = switchover.GetProperty("blueFinalPosition").GetString()!;
        switchover.GetProperty("slot.cdc_td").GetString().ShouldNotBeNullOrEmpty();
        switchover.GetProperty("plugin.cdc_po").GetString().ShouldBe("pgoutput");
        await Task.Delay(TimeSpan.FromSeconds(2));

        // Consumers finish blue's slots up to blue's final position (the old blue is fenced:
        // a consumer that reconnects after the cutover does so as Teal's login).
        var oldBlue = await scenario.InstanceUrlAsync("app-old1", asTeal: true);
        var fromBlueTd = await CdcConsumers.ReadTestDecodingAsync(oldBlue, "cdc_td", blueFinal);
        var fromBluePo = await CdcConsumers.ReadPgOutputAsync(oldBlue, "cdc_po", Publication, blueFinal);

        // 2. Switchback: the slots on the old blue (stale: they decoded green's writes as
        // reverse replication applied them) are replaced by new ones from before its first write.
        (await scenario.Cli.RunAsync(["switchback", "upgrade", "--wait"], TimeSpan.FromMinutes(2))).ShouldSucceed();
        var events = await CdcEventsAsync(scenario);
        events.Count.ShouldBe(2);
        var greenFinal = events[1].GetProperty("blueFinalPosition").GetString()!;
        var messages = await CdcMessagesAsync(scenario);
        messages[1].ShouldContain("replacing the stale one");
        await Task.Delay(TimeSpan.FromSeconds(2));
        await probe.StopAsync();

        var green = await scenario.InstanceUrlAsync(greenName, asTeal: true);
        var fromGreenTd = await CdcConsumers.ReadTestDecodingAsync(green, "cdc_td", greenFinal);
        var fromGreenPo = await CdcConsumers.ReadPgOutputAsync(green, "cdc_po", Publication, greenFinal);

        // 3. Back on blue: its new slots from their start to the end of the load.
        var blue = await scenario.InstanceUrlAsync("app", asTeal: true);
        var blueEnd = await BlueGreenScenario.ScalarAsync<string>(blue, "SELECT pg_current_wal_lsn()::text");
        var fromBackTd = await CdcConsumers.ReadTestDecodingAsync(blue, "cdc_td", blueEnd);
        var fromBackPo = await CdcConsumers.ReadPgOutputAsync(blue, "cdc_po", Publication, null);

        // Exactly the committed rows, each once, in both consumers; and rows from all three legs.
        var committed = await CommittedAsync(blue);
        committed.Count.ShouldBeGreaterThan(200, string.Join("\n", probe.Errors.TakeLast(5)));
        foreach (var (consumer, legs) in new[] { ("test_decoding", new[] { fromBlueTd, fromGreenTd, fromBackTd }), ("pgoutput", new[] { fromBluePo, fromGreenPo, fromBackPo }) })
        {
            var union = legs.SelectMany(l => l).ToList();
            var duplicates = union.GroupBy(n => n).Where(g => g.Count() > 1).Select(g => g.Key).Take(10).ToList();
            duplicates.ShouldBeEmpty($"{consumer} read rows twice");
            union.Order().ToList().ShouldBe(committed, $"{consumer}: missing {string.Join(",", committed.Except(union).Take(10))}; extra {string.Join(",", union.Except(committed).Take(10))}");
            legs.ShouldAllBe(l => l.Count > 0, $"{consumer}: every leg carries rows ({string.Join("/", legs.Select(l => l.Count))})");
        }
    }

    [Fact]
    public async Task CdcWait_ConsumerNotReading_RollsBack_ThenLiveConsumer_LetsSwitchoverThrough()
    {
        await using var scenario = await BlueGreenScenario.StartAsync();
        // A name that is no logical slot on blue is refused at create, before green is built.
        var refused = await scenario.Cli.RunAsync(["create", "upgrade", "--source", "app", "--target-engine-version", "17", "--cdc-slot", "nope"], TimeSpan.FromMinutes(2));
        refused.ExitCode.ShouldBe(1, refused.ToString());
        refused.Stderr.ShouldContain("nope does not exist on blue");

        await scenario.Blue.ExecuteAsync("SELECT pg_create_logical_replication_slot('cdc_td', 'test_decoding')", BlueGreenScenario.Database);
        (await scenario.Cli.RunAsync(["create", "upgrade", "--source", "app", "--target-engine-version", "17", "--cdc-slot", "cdc_td", "--cdc-wait", "--wait"], TimeSpan.FromMinutes(5))).ShouldSucceed();
        await BlueGreenScenario.ExecuteAsync(scenario.EndpointConnectionString, "INSERT INTO orders (note) VALUES ('before the switchover')");

        // Nobody reads the slot: the switchover waits for its consumer, times out, rolls back.
        var timedOut = await scenario.Cli.RunAsync(["switchover", "upgrade", "--switchover-timeout", "30", "--wait"], TimeSpan.FromMinutes(2));
        timedOut.ExitCode.ShouldNotBe(0, timedOut.ToString());
        var rolledBack = await scenario.ShowAsync();
        BlueGreenScenario.Status(rolledBack).ShouldBe("SWITCHOVER_FAILED", rolledBack.ToString());
        (rolledBack.GetProperty("switchover").GetProperty("reason").GetString() ?? string.Empty).ShouldContain("catch-up");
        (await BlueGreenScenario.AcceptsWritesAsync(scenario.EndpointConnectionString)).ShouldBeTrue();

        // A live consumer confirms as it reads: the switchover goes through.
        var file = Path.Combine(Path.GetTempPath(), $"teal-cdc-{Guid.NewGuid():N}.txt");
        using var consumer = CdcConsumers.FollowTestDecoding(await scenario.InstanceUrlAsync("app", asTeal: true), "cdc_td", file);
        try
        {
            (await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(2))).ShouldSucceed();
            var final = (await CdcEventsAsync(scenario)).ShouldHaveSingleItem().GetProperty("blueFinalPosition").GetString()!;
            var confirmed = await BlueGreenScenario.ScalarAsync<bool>(
                await scenario.InstanceUrlAsync("app-old1", asTeal: true),
                $"SELECT confirmed_flush_lsn >= '{final}'::pg_lsn FROM pg_replication_slots WHERE slot_name = 'cdc_td'");
            confirmed.ShouldBeTrue();
            (await File.ReadAllTextAsync(file)).ShouldContain("before the switchover");
        }
        finally
        {
            consumer.Kill();
            await consumer.WaitForExitAsync();
            File.Delete(file);
        }
    }

    private static async Task<List<JsonElement>> CdcEventsAsync(BlueGreenScenario scenario) =>
        [.. (await EventsAsync(scenario)).Where(e => e.GetProperty("kind").GetString() == "cdc-slots-created").Select(e => e.GetProperty("data"))];

    private static async Task<List<string>> CdcMessagesAsync(BlueGreenScenario scenario) =>
        [.. (await EventsAsync(scenario)).Where(e => e.GetProperty("kind").GetString() == "cdc-slots-created").Select(e => e.GetProperty("message").GetString()!)];

    private static async Task<List<JsonElement>> EventsAsync(BlueGreenScenario scenario)
    {
        var events = await scenario.Cli.RunAsync("events", "upgrade", "--output", "json");
        events.ShouldSucceed();
        return [.. JsonDocument.Parse(events.Stdout).RootElement.EnumerateArray().Select(e => e.Clone())];
    }

    private static async Task<List<long>> CommittedAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false }.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"SELECT n FROM {ProbeWriter.Table} ORDER BY n", connection);
        await using var reader = await command.ExecuteReaderAsync();
        var rows = new List<long>();
        while (await reader.ReadAsync())
        {
            rows.Add(reader.GetInt64(0));
        }

        return rows;
    }
}
