using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.Core.Guardrails;
using Teal.Postgres.Replication;
using Teal.Testing;

namespace Teal.Postgres.Tests.Replication;

/// <summary>
/// Green after the initial copy: no planner statistics and no visibility map until Teal's
/// VACUUM (ANALYZE), which the guardrail <c>green.statistics</c> insists on. Green runs without
/// autovacuum here, so nothing but Teal analyzes it.
/// </summary>
public sealed class GreenStatisticsTests
{
    private const string Db = "stats";

    [Fact]
    public async Task AfterTheCopy_GuardrailNamesUnanalyzedTables_PrepareGreenFixesItWithProgress()
    {
        var blueStart = PostgresServer.StartAsync("15");
        var greenStart = PostgresServer.StartAsync("17", new Dictionary<string, string> { ["autovacuum"] = "off" });
        await using var blue = await blueStart;
        await using var green = await greenStart;
        await LinkTestKit.CreateDatabaseAsync(
            blue,
            Db,
            """
            CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, note text);
            CREATE INDEX orders_customer ON orders (customer);
            INSERT INTO orders SELECT g, g % 100, repeat('x', g % 50) FROM generate_series(1, 20000) g;
            CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
            CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
            CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
            INSERT INTO events SELECT g, date '2025-06-01' + (g % 400) FROM generate_series(1, 4000) g;
            CREATE TABLE audit (id bigint PRIMARY KEY, what text);
            """);
        var name = LinkTestKit.NewName("teal");
        await using var link = LinkTestKit.Link(blue, green, Db, name);
        (await link.CheckPrerequisitesAsync(default)).Failures.ShouldBeEmpty();
        await link.CopySchemaAsync(default);
        await link.StartReplicationAsync(default);
        await LinkTestKit.WaitForStateAsync(link, ReplicationState.Replicating, TimeSpan.FromSeconds(120));

        var before = await StatisticsCheckAsync(link);
        before.Outcome.ShouldBe(CheckOutcome.Fail, before.Message);
        before.Message.ShouldContain("public.orders");
        before.Message.ShouldContain("public.events");
        // Judged by their root, which the subscription copies through.
        before.Message.ShouldNotContain("public.events_2025");
        before.Message.ShouldNotContain("audit");
        before.Hint!.ShouldContain("VACUUM (ANALYZE)");
        before.Hint!.ShouldContain("\"public\".\"orders\"");

        var reports = new List<TablePrepared>();
        var prepared = await link.PrepareGreenAsync(new SyncProgress<TablePrepared>(reports.Add), default);

        prepared.ShouldBe(["public.audit", "public.events", "public.orders"]);
        reports.Select(r => r.Table).ShouldBe(prepared);
        reports.Select(r => r.Done).ShouldBe([1, 2, 3]);
        reports.ShouldAllBe(r => r.Total == 3);
        reports[^1].BytesDone.ShouldBe(reports[^1].BytesTotal);
        reports[^1].BytesTotal.ShouldBeGreaterThan(500_000);
        (await StatisticsCheckAsync(link)).Outcome.ShouldBe(CheckOutcome.Pass);

        // The planner has real figures, the partitioned root included (autovacuum never analyzes
        // one), and the visibility map is set, so reads need not touch the heap or rewrite it.
        (await green.ScalarAsync<double>("SELECT reltuples FROM pg_class WHERE oid = 'orders'::regclass", Db)).ShouldBe(20000, 1);
        (await green.ScalarAsync<bool>("SELECT EXISTS (SELECT 1 FROM pg_stats WHERE tablename = 'events' AND inherited)", Db)).ShouldBeTrue();
        (await green.ScalarAsync<bool>("SELECT EXISTS (SELECT 1 FROM pg_stats WHERE tablename = 'events_2026')", Db)).ShouldBeTrue();
        (await green.ScalarAsync<bool>("SELECT relallvisible = relpages AND relpages > 0 FROM pg_class WHERE oid = 'orders'::regclass", Db)).ShouldBeTrue();

        // Rows that reach a table empty at the copy are autovacuum's business, as on any server.
        await blue.ExecuteAsync("INSERT INTO audit SELECT g, 'a' FROM generate_series(1, 500) g", Db);
        await LinkTestKit.WaitUntilAsync(async () => await green.ScalarAsync<long>("SELECT count(*) FROM audit", Db) == 500, "audit rows on green");
        (await StatisticsCheckAsync(link)).Outcome.ShouldBe(CheckOutcome.Pass);

        await link.RemoveAsync(default);
    }

    private static async Task<CheckResult> StatisticsCheckAsync(PostgresReplicationLink link) =>
        (await link.CheckSwitchoverAsync(new SwitchoverGuardrailOptions(TimeSpan.FromSeconds(60)), default)).Results.Single(r => r.Name == "green.statistics");

    /// <summary>Reports on the caller's thread (<see cref="Progress{T}"/> would post them elsewhere, in no set order).</summary>
    private sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
