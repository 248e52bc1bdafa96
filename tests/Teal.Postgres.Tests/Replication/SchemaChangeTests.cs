using Npgsql;
using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.Postgres.Replication;
using Xunit.Abstractions;

namespace Teal.Postgres.Tests.Replication;

/// <summary>
/// A shop schema as applications have them — orders partitioned by month, an enum, a domain,
/// a trigger, a materialized view, a sequence shared by no column — replicated from 15 to 17,
/// once for the class.
/// </summary>
public sealed class SchemaChangeFixture : IAsyncLifetime
{
    public const string Database = "shop";

    public const string Schema = """
        CREATE TYPE order_state AS ENUM ('new', 'paid', 'shipped');
        CREATE DOMAIN cents AS bigint CHECK (VALUE >= 0);
        CREATE SEQUENCE order_numbers;
        CREATE TABLE customers (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL);
        CREATE TABLE orders (
            id bigint NOT NULL DEFAULT nextval('order_numbers'),
            placed date NOT NULL,
            customer_id bigint NOT NULL REFERENCES customers (id),
            state order_state NOT NULL DEFAULT 'new',
            total cents NOT NULL,
            updated_at timestamptz,
            PRIMARY KEY (id, placed)) PARTITION BY RANGE (placed);
        CREATE TABLE orders_2026_10 PARTITION OF orders FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
        CREATE TABLE orders_2026_11 PARTITION OF orders FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
        CREATE TABLE orders_2026_12 PARTITION OF orders FOR VALUES FROM ('2026-12-01') TO ('2027-01-01');
        CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
        CREATE TRIGGER orders_touch BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION touch();
        INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, 100) g;
        INSERT INTO orders (placed, customer_id, state, total)
            SELECT DATE '2026-10-01' + (g % 92), 1 + g % 100, (ARRAY['new', 'paid', 'shipped'])[1 + g % 3]::order_state, g * 10 FROM generate_series(1, 3000) g;
        CREATE MATERIALIZED VIEW daily_revenue AS SELECT placed, count(*) AS orders, sum(total) AS revenue FROM orders GROUP BY placed;
        CREATE UNIQUE INDEX daily_revenue_placed ON daily_revenue (placed);
        """;

    private readonly RoomyBlueGreenFixture _servers = new();
    private PostgresReplicationLink? _link;

    public string Name { get; } = LinkTestKit.NewName("teal");

    public Testing.PostgresServer Blue => _servers.Blue;

    public Testing.PostgresServer Green => _servers.Green;

    public PostgresReplicationLink Link => _link ?? throw new InvalidOperationException("the fixture has not started");

    public async Task InitializeAsync()
    {
        await _servers.InitializeAsync();
        await LinkTestKit.CreateDatabaseAsync(Blue, Database, Schema);
        _link = LinkTestKit.Link(Blue, Green, Database, Name);
        await LinkTestKit.StartAsync(_link);
    }

    public async Task DisposeAsync()
    {
        if (_link is not null)
        {
            await _link.DisposeAsync();
        }

        await _servers.DisposeAsync();
    }
}

/// <summary>
/// Issue 14, point 2: DDL while replicating, as an application does it. Each test makes green's
/// apply worker fail for real (a new table, column or partition that blue writes to), checks
/// that Teal says so — stalled, the error, what green lacks — and that the fix it names brings
/// every row across, nothing twice. Each test leaves the deployment REPLICATING.
/// </summary>
public sealed class SchemaChangeTests(SchemaChangeFixture deployment, ITestOutputHelper output) : IClassFixture<SchemaChangeFixture>
{
    private const string Db = SchemaChangeFixture.Database;

    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(90);

    [Fact]
    public async Task NewTableWithRowsInOneQuery_StallsWithTheError_ApplyDdlRunsOnlyTheCreate_RowsArriveOnce()
    {
        await deployment.Blue.ExecuteAsync("CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 10) g", Db);

        var stalled = await WaitForAsync(s => s.Stalled, "a stall");
        stalled.State.ShouldBe(ReplicationState.Degraded);
        stalled.Reason.ShouldNotBeNull();
        stalled.Reason.ShouldContain("replication is stalled");
        stalled.ApplyError.ShouldNotBeNull();
        stalled.ApplyError.ShouldContain("\"public.notes\" does not exist");
        stalled.SchemaDifferences.ShouldContain("table public.notes is missing on green");
        var ddl = stalled.PendingDdl.ShouldHaveSingleItem();
        ddl.Statement.ShouldBe("CREATE TABLE notes (id int PRIMARY KEY, body text)");
        ddl.Replayable.ShouldBeTrue();
        await LagGrowsAsync();

        var applied = (await deployment.Link.ApplyDdlAsync(default)).ShouldHaveSingleItem();
        applied.Outcome.ShouldBe("applied");
        (await deployment.Link.AddMissingTablesAsync(default)).ShouldContain("public.notes");

        await NeverStoppedUntilReplicatingAsync();
        await LinkTestKit.WaitUntilAsync(async () => await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM notes", Db) == 10, "the new table's rows on green");
        await deployment.Blue.ExecuteAsync("INSERT INTO notes VALUES (11, 'after')", Db);
        await LinkTestKit.WaitUntilAsync(async () => await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM notes", Db) == 11, "a later row on green");
    }

    [Fact]
    public async Task NewColumn_StallsOnMissingColumn_AddTablesAddsItFromBluesCatalog_AndAcknowledgesTheDdl()
    {
        await deployment.Blue.ExecuteAsync(
            "ALTER TABLE customers ADD COLUMN vip boolean NOT NULL DEFAULT false; UPDATE customers SET vip = true WHERE id <= 5",
            Db);

        var stalled = await WaitForAsync(s => s.Stalled, "a stall");
        stalled.ApplyError.ShouldNotBeNull();
        stalled.ApplyError.ShouldContain("missing replicated column");
        stalled.SchemaDifferences.ShouldBe(["column public.customers.vip is missing on green"]);
        stalled.PendingDdl.ShouldHaveSingleItem().Statement.ShouldBe("ALTER TABLE customers ADD COLUMN vip boolean NOT NULL DEFAULT false");

        var added = await deployment.Link.AddMissingTablesAsync(default);
        added.ShouldBe(["public.customers.vip (column)"]);
        (await deployment.Link.ReadStatusAsync(default)).PendingDdl.ShouldBeEmpty();

        await NeverStoppedUntilReplicatingAsync();
        await LinkTestKit.WaitUntilAsync(async () => await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM customers WHERE vip", Db) == 5, "the updates on green");
        (await deployment.Green.ScalarAsync<string>("SELECT column_default FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'vip'", Db)).ShouldBe("false");
    }

    [Fact]
    public async Task NextMonthsPartition_StallsOnNoPartition_AddTablesCreatesItAsAPartitionOfTheParent()
    {
        await deployment.Blue.ExecuteAsync("CREATE TABLE orders_2027_01 PARTITION OF orders FOR VALUES FROM ('2027-01-01') TO ('2027-02-01')", Db);
        await deployment.Blue.ExecuteAsync("INSERT INTO orders (placed, customer_id, total) SELECT DATE '2027-01-01' + g % 31, 1, g FROM generate_series(1, 50) g", Db);

        var stalled = await WaitForAsync(s => s.Stalled, "a stall");
        stalled.ApplyError.ShouldNotBeNull();
        stalled.ApplyError.ShouldContain("no partition of relation \"orders\" found for row");
        stalled.SchemaDifferences.ShouldBe(["partition public.orders_2027_01 of public.orders is missing on green"]);
        output.WriteLine(stalled.Reason);

        (await deployment.Link.AddMissingTablesAsync(default)).ShouldBe(["public.orders_2027_01 (partition of public.orders)"]);
        await NeverStoppedUntilReplicatingAsync();
        await LinkTestKit.WaitUntilAsync(async () => await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM ONLY orders_2027_01", Db) == 50, "the new partition's rows on green");
        (await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM pg_inherits WHERE inhrelid = 'orders_2027_01'::regclass AND inhparent = 'orders'::regclass", Db)).ShouldBe(1);
        // Green derived the partition's key from its parent, as blue did.
        (await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM pg_index WHERE indrelid = 'orders_2027_01'::regclass AND indisprimary", Db)).ShouldBe(1);
    }

    [Fact]
    public async Task PartitionMadeInsideAFunction_IsNotReplayed_AddTablesBuildsIt()
    {
        await deployment.Blue.ExecuteAsync(
            """
            CREATE FUNCTION make_partition(first date) RETURNS void LANGUAGE plpgsql AS $$
            BEGIN
                EXECUTE format('CREATE TABLE %I PARTITION OF orders FOR VALUES FROM (%L) TO (%L)', 'orders_' || to_char(first, 'YYYY_MM'), first, first + interval '1 month');
            END $$
            """,
            Db);
        await deployment.Blue.ExecuteAsync("SELECT make_partition(DATE '2027-02-01')", Db);

        var degraded = await WaitForAsync(s => s.PendingDdl.Count == 2, "both commands recorded");
        degraded.PendingDdl[0].CommandTag.ShouldBe("CREATE FUNCTION");
        degraded.PendingDdl[0].Replayable.ShouldBeTrue();
        degraded.PendingDdl[1].Statement.ShouldBe("SELECT make_partition(DATE '2027-02-01')");
        degraded.PendingDdl[1].Replayable.ShouldBeFalse();

        var outcomes = await deployment.Link.ApplyDdlAsync(default);
        outcomes.Select(o => o.Outcome).ShouldBe(["applied", "not run: CREATE TABLE ran inside this query, which may do more than DDL"]);
        (await deployment.Link.AddMissingTablesAsync(default)).ShouldContain("public.orders_2027_02 (partition of public.orders)");

        await NeverStoppedUntilReplicatingAsync();
        (await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM pg_proc WHERE proname = 'make_partition'", Db)).ShouldBe(1);
    }

    [Fact]
    public async Task NewSchemaWithATable_AddTablesCreatesTheSchemaAndCopiesTheRows()
    {
        await deployment.Blue.ExecuteAsync("CREATE SCHEMA sales; CREATE TABLE sales.deals (id int PRIMARY KEY, state order_state NOT NULL); INSERT INTO sales.deals SELECT g, 'paid' FROM generate_series(1, 40) g", Db);

        var degraded = await WaitForAsync(s => s.PendingDdl.Count == 2 && s.State == ReplicationState.Degraded, "the DDL recorded");
        degraded.PendingDdl.Select(d => d.CommandTag).ShouldBe(["CREATE SCHEMA", "CREATE TABLE"]);

        var added = await deployment.Link.AddMissingTablesAsync(default);
        added.ShouldContain("schema sales");
        added.ShouldContain("sales.deals");
        await NeverStoppedUntilReplicatingAsync();
        await LinkTestKit.WaitUntilAsync(async () => await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM sales.deals", Db) == 40, "the new schema's rows on green");
    }

    [Fact]
    public async Task PublicationsAndMaterializedViewRefreshesOnBlue_AreNotDdl()
    {
        var before = await deployment.Blue.ScalarAsync<long>("SELECT count(*) FROM teal.ddl_log", Db);
        await deployment.Blue.ExecuteAsync("CREATE PUBLICATION reporting FOR TABLE customers", Db);
        await deployment.Blue.ExecuteAsync("ALTER PUBLICATION reporting ADD TABLE orders", Db);
        await deployment.Blue.ExecuteAsync("DROP PUBLICATION reporting", Db);
        await deployment.Blue.ExecuteAsync("REFRESH MATERIALIZED VIEW daily_revenue", Db);
        await deployment.Blue.ExecuteAsync("REFRESH MATERIALIZED VIEW CONCURRENTLY daily_revenue", Db);
        // A DROP is recorded once (sql_drop and ddl_command_end both fire for it), a temporary table not at all.
        await deployment.Blue.ExecuteAsync("CREATE TEMP TABLE scratch (a int); DROP TABLE scratch; CREATE TABLE gone (a int PRIMARY KEY); DROP TABLE gone", Db);

        (await deployment.Blue.ScalarAsync<string>($"SELECT string_agg(command_tag, ',' ORDER BY id) FROM teal.ddl_log WHERE id > {before}", Db)).ShouldBe("CREATE TABLE,DROP TABLE");
        var pending = (await deployment.Link.ReadStatusAsync(default)).PendingDdl;
        pending.Select(p => p.Statement).ShouldBe(["CREATE TABLE gone (a int PRIMARY KEY)", "DROP TABLE gone"]);
        var outcomes = await deployment.Link.ApplyDdlAsync(default);
        outcomes.Select(o => o.Outcome).ShouldBe(["applied", "applied"]);
        await NeverStoppedUntilReplicatingAsync();
    }

    [Fact]
    public async Task MaterializedView_RefreshedOnGreen_VerifyComparesItsContents()
    {
        // Blue's view as of now, green's computed from the same rows once green has them.
        await deployment.Blue.ExecuteAsync("REFRESH MATERIALIZED VIEW daily_revenue", Db);
        await CatchUpAsync();
        await deployment.Link.RefreshMaterializedViewsAsync(default);
        (await Verified()).Matches.ShouldBeTrue();

        await deployment.Blue.ExecuteAsync("INSERT INTO orders (placed, customer_id, total) VALUES ('2026-12-24', 1, 999); REFRESH MATERIALIZED VIEW daily_revenue", Db);
        var stale = await Verified();
        stale.Problem.ShouldBeNull();
        stale.Matches.ShouldBeFalse();

        await CatchUpAsync();
        (await deployment.Link.RefreshMaterializedViewsAsync(default)).ShouldBe(["public.daily_revenue"]);
        (await Verified()).Matches.ShouldBeTrue();
        (await deployment.Green.ScalarAsync<long>("SELECT orders FROM daily_revenue WHERE placed = '2026-12-24'", Db))
            .ShouldBe(await deployment.Blue.ScalarAsync<long>("SELECT orders FROM daily_revenue WHERE placed = '2026-12-24'", Db));

        async Task<TableVerification> Verified() => (await deployment.Link.VerifyAsync(null, default)).Tables.Single(t => t.Table == "public.daily_revenue");
    }

    [Fact]
    public async Task MaterializedViewNotPopulatedOnGreen_IsADifference()
    {
        await LinkTestKit.WriteAsTealAsync(deployment.Green, Db, "REFRESH MATERIALIZED VIEW daily_revenue WITH NO DATA");
        try
        {
            var view = (await deployment.Link.VerifyAsync(null, default)).Tables.Single(t => t.Table == "public.daily_revenue");
            view.Matches.ShouldBeFalse();
            view.Problem.ShouldNotBeNull();
            view.Problem.ShouldContain("not on green");
        }
        finally
        {
            await deployment.Link.RefreshMaterializedViewsAsync(default);
        }
    }

    [Fact]
    public async Task Verify_NamesThePartitionThatDiffers()
    {
        await LinkTestKit.WriteAsTealAsync(deployment.Green, Db, "UPDATE orders SET total = total + 1 WHERE id = 42");
        try
        {
            var orders = (await deployment.Link.VerifyAsync(null, default)).Tables.Single(t => t.Table == "public.orders");
            orders.Matches.ShouldBeFalse();
            var partition = await deployment.Blue.ScalarAsync<string>("SELECT tableoid::regclass::text FROM orders WHERE id = 42", Db);
            orders.DifferingPartitions.ShouldBe([$"public.{partition}"]);
        }
        finally
        {
            await LinkTestKit.WriteAsTealAsync(deployment.Green, Db, "UPDATE orders SET total = total - 1 WHERE id = 42");
        }
    }

    /// <summary>Waits until green has applied everything blue wrote so far.</summary>
    private async Task CatchUpAsync()
    {
        var position = await deployment.Link.MarkFinalPositionAsync(default);
        await deployment.Link.WaitForPositionAsync(position, default);
    }

    /// <summary>Heartbeat and read until <paramref name="condition"/> holds.</summary>
    private async Task<ReplicationSnapshot> WaitForAsync(Func<ReplicationSnapshot, bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Wait;
        ReplicationSnapshot snapshot;
        do
        {
            await deployment.Link.WriteHeartbeatAsync(default);
            snapshot = await deployment.Link.ReadStatusAsync(default);
            if (condition(snapshot))
            {
                output.WriteLine($"{snapshot.State}: {snapshot.Reason}");
                return snapshot;
            }

            await Task.Delay(200);
        }
        while (DateTime.UtcNow < deadline);
        throw new TimeoutException($"{what} did not happen; last {snapshot.State}: {snapshot.Reason}");
    }

    /// <summary>While stalled, the lag in seconds only grows.</summary>
    private async Task LagGrowsAsync()
    {
        await deployment.Link.WriteHeartbeatAsync(default);
        var first = (await deployment.Link.ReadStatusAsync(default)).LagSeconds;
        await Task.Delay(1500);
        await deployment.Link.WriteHeartbeatAsync(default);
        var second = await deployment.Link.ReadStatusAsync(default);
        second.Stalled.ShouldBeTrue();
        first.ShouldNotBeNull();
        second.LagSeconds.ShouldNotBeNull();
        second.LagSeconds.Value.ShouldBeGreaterThan(first.Value);
    }

    /// <summary>After a fix the apply worker restarts: that is never reported STOPPED.</summary>
    private async Task NeverStoppedUntilReplicatingAsync()
    {
        var seen = new List<string>();
        var healthy = await WaitForAsync(
            s =>
            {
                seen.Add($"{s.State}: {s.Reason}");
                s.State.ShouldNotBe(ReplicationState.Stopped, string.Join("\n", seen));
                return s.State == ReplicationState.Replicating && s.WorkerRunning && !s.Stalled;
            },
            "REPLICATING again");
        healthy.PendingDdl.ShouldBeEmpty();
        healthy.SchemaDifferences.ShouldBeEmpty();
    }
}
