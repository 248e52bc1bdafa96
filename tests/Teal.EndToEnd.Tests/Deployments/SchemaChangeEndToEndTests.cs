using System.Text.Json;
using System.Text.RegularExpressions;
using Npgsql;
using Teal.Testing.Load;
using Xunit.Abstractions;

namespace Teal.EndToEnd.Tests.Deployments;

/// <summary>
/// Issue 14, point 3: an application on a realistic schema (orders partitioned by month, an
/// enum, a domain, a trigger, a materialized view) ships a release while Teal replicates it —
/// a new table, a new column and next month's partition, each written to at once. The operator
/// does nothing but run the command Teal's status names, then verifies and switches over; no
/// acknowledged write may be lost and the view must answer on green.
/// </summary>
public sealed partial class SchemaChangeEndToEndTests(ITestOutputHelper output)
{
    private const string Db = BlueGreenScenario.Database;

    private const string Shop = """
        CREATE TYPE order_state AS ENUM ('new', 'paid', 'shipped');
        CREATE DOMAIN cents AS bigint CHECK (VALUE >= 0);
        CREATE TABLE shop_orders (
            id bigint GENERATED ALWAYS AS IDENTITY,
            placed date NOT NULL,
            state order_state NOT NULL DEFAULT 'new',
            total cents NOT NULL,
            updated_at timestamptz,
            PRIMARY KEY (id, placed)) PARTITION BY RANGE (placed);
        CREATE TABLE shop_orders_2026_11 PARTITION OF shop_orders FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
        CREATE TABLE shop_orders_2026_12 PARTITION OF shop_orders FOR VALUES FROM ('2026-12-01') TO ('2027-01-01');
        CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
        CREATE TRIGGER shop_orders_touch BEFORE INSERT OR UPDATE ON shop_orders FOR EACH ROW EXECUTE FUNCTION touch();
        INSERT INTO shop_orders (placed, state, total) SELECT DATE '2026-11-01' + g % 61, 'paid', g FROM generate_series(1, 2000) g;
        CREATE MATERIALIZED VIEW daily_revenue AS SELECT placed, count(*) AS orders, sum(total) AS revenue FROM shop_orders GROUP BY placed;
        """;

    [Fact]
    public async Task ApplicationAddsATableAColumnAndAPartitionMidReplication_OperatorFollowsTealsHints_SwitchoverLosesNothing()
    {
        await using var scenario = await BlueGreenScenario.StartAsync();
        await scenario.Blue.ExecuteAsync(Shop, Db);

        var created = await scenario.Cli.RunAsync(["create", "upgrade", "--source", "app", "--target-engine-version", "17", "--wait"], TimeSpan.FromMinutes(5));
        created.ShouldSucceed();
        created.Stdout.ShouldContain("warning: logical replication carries no materialized view contents: public.daily_revenue");
        var greenName = (await scenario.ShowAsync()).GetProperty("green").GetString()!;
        var green = await scenario.InstanceUrlAsync(greenName);
        // Refreshed on green before AVAILABLE: the view answers there.
        (await BlueGreenScenario.ScalarAsync<long>(green, "SELECT sum(orders) FROM daily_revenue")).ShouldBe(2000);

        await using var probe = new ProbeWriter(scenario.EndpointConnectionString);
        probe.Start();

        // The release: each change is used by the very same query, as a migration script would.
        await scenario.Blue.ExecuteAsync("CREATE TABLE coupons (code text PRIMARY KEY, percent int NOT NULL); INSERT INTO coupons SELECT 'C' || g, g % 50 FROM generate_series(1, 200) g", Db);
        await scenario.Blue.ExecuteAsync("ALTER TABLE shop_orders ADD COLUMN coupon text; INSERT INTO shop_orders (placed, total, coupon) SELECT DATE '2026-12-01' + g % 31, g, 'C' || g FROM generate_series(1, 150) g", Db);
        await scenario.Blue.ExecuteAsync("CREATE TABLE shop_orders_2027_01 PARTITION OF shop_orders FOR VALUES FROM ('2027-01-01') TO ('2027-02-01'); INSERT INTO shop_orders (placed, total) SELECT DATE '2027-01-01' + g % 31, g FROM generate_series(1, 100) g", Db);

        // Teal says replication is stalled, quotes green's error and names the fix.
        var stalled = await WaitForReasonAsync(scenario, "replication is stalled", TimeSpan.FromMinutes(2));
        output.WriteLine($"teal show: {stalled}");
        stalled.ShouldContain("does not exist");
        stalled.ShouldContain("fix: `teal apply-ddl upgrade`");

        // The operator runs what the status names, and nothing else, until replication is healthy.
        var followed = new List<string>();
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(3);
        while (true)
        {
            var replication = (await scenario.ShowAsync()).GetProperty("replication");
            var state = BlueGreenScenario.Normalize(replication.GetProperty("state").GetString());
            var reason = replication.TryGetProperty("reason", out var r) && r.ValueKind == JsonValueKind.String ? r.GetString()! : string.Empty;
            if (state == "REPLICATING" && replication.GetProperty("pendingDdl").GetArrayLength() == 0)
            {
                break;
            }

            DateTime.UtcNow.ShouldBeLessThan(deadline, $"replication still {state}: {reason}; ran: {string.Join("; ", followed)}");
            state.ShouldNotBe("STOPPED", reason);
            if (state == "DEGRADED" && Fix().Match(reason) is { Success: true } fix && followed.Count < 6)
            {
                var command = fix.Groups[1].Value;
                followed.Add(command);
                var ran = await scenario.Cli.RunAsync(command.Split(' ')[1..]);
                output.WriteLine($"$ {command}\n{ran.Stdout}{ran.Stderr}");
                ran.ShouldSucceed();
            }

            await Task.Delay(TimeSpan.FromSeconds(1));
        }

        followed.ShouldNotBeEmpty();
        followed[0].ShouldBe("teal apply-ddl upgrade");
        var events = await scenario.Cli.RunAsync("events", "upgrade");
        events.Stdout.ShouldContain("replication recovered: DEGRADED →");
        (await scenario.Cli.RunAsync("verify", "upgrade")).ShouldSucceed();

        var switchover = await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait"], TimeSpan.FromMinutes(2));
        switchover.ShouldSucceed();
        await probe.StopAsync();

        // Green is production now: every row of the release, every acknowledged probe write, and the view.
        var app = await scenario.InstanceUrlAsync("app");
        (await BlueGreenScenario.ScalarAsync<string>(app, "SHOW server_version")).ShouldStartWith("17.");
        (await BlueGreenScenario.ScalarAsync<long>(app, "SELECT count(*) FROM coupons")).ShouldBe(200);
        (await BlueGreenScenario.ScalarAsync<long>(app, "SELECT count(*) FROM shop_orders WHERE coupon IS NOT NULL")).ShouldBe(150);
        (await BlueGreenScenario.ScalarAsync<long>(app, "SELECT count(*) FROM ONLY shop_orders_2027_01")).ShouldBe(100);
        (await BlueGreenScenario.ScalarAsync<long>(app, "SELECT count(*) FROM shop_orders")).ShouldBe(2250);
        (await BlueGreenScenario.ScalarAsync<long>(app, "SELECT sum(orders) FROM daily_revenue")).ShouldBe(2250);
        var acked = probe.Acknowledged;
        acked.Count.ShouldBeGreaterThan(10);
        await using (var connection = new NpgsqlConnection(app))
        {
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand($"SELECT count(*) FROM {ProbeWriter.Table} WHERE n = ANY($1)", connection) { Parameters = { new() { Value = acked.ToArray() } } };
            ((long)(await command.ExecuteScalarAsync())!).ShouldBe(acked.Count);
        }

        // New orders get fresh identities on green (sequences synced at switchover).
        (await BlueGreenScenario.ScalarAsync<long>(app, "INSERT INTO shop_orders (placed, total) VALUES ('2027-01-15', 1) RETURNING id")).ShouldBeGreaterThan(2250);
    }

    private static async Task<string> WaitForReasonAsync(BlueGreenScenario scenario, string text, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        var reason = string.Empty;
        while (DateTime.UtcNow < deadline)
        {
            var replication = (await scenario.ShowAsync()).GetProperty("replication");
            reason = replication.TryGetProperty("reason", out var r) && r.ValueKind == JsonValueKind.String ? r.GetString()! : string.Empty;
            if (reason.Contains(text, StringComparison.Ordinal))
            {
                return reason;
            }

            await Task.Delay(500);
        }

        throw new TimeoutException($"the status never said '{text}'; last: {reason}");
    }

    [GeneratedRegex("fix: `(teal [^`]+)`")]
    private static partial Regex Fix();
}
