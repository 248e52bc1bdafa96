using MySqlConnector;
using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.MySql.Replication;
using Teal.Testing;

namespace Teal.MySql.Tests.Replication;

/// <summary>Create, replicate, DDL, lag and verify over a real MariaDB blue and green.</summary>
public sealed class ReplicationLinkTests : IAsyncLifetime
{
    private MariaDbServer _blue = null!;
    private MariaDbServer _green = null!;

    public async Task InitializeAsync()
    {
        var servers = await Task.WhenAll(MariaDbServer.StartAsync(), MariaDbServer.StartAsync());
        (_blue, _green) = (servers[0], servers[1]);
        await SampleSchema.CreateAsync(_blue, 5000);
    }

    public async Task DisposeAsync()
    {
        await _blue.DisposeAsync();
        await _green.DisposeAsync();
    }

    [Fact]
    public async Task Create_CopiesAtOneGtid_ReplicatesDdlAsAnEvent_AndVerifyComparesAtOnePosition()
    {
        await using var link = LinkKit.Link(_blue, _green);
        var report = await link.CheckPrerequisitesAsync(CancellationToken.None);
        report.Passed.ShouldBeTrue(string.Join("; ", report.Failures.Select(f => f.Message)));

        await link.CopySchemaAsync(CancellationToken.None);
        await link.StartReplicationAsync(CancellationToken.None);
        var snapshot = await WaitReplicatingAsync(link);

        snapshot.State.ShouldBe(ReplicationState.Replicating, snapshot.Reason);
        snapshot.Tables.ShouldContain(t => t.Table == "app.orders" && t.State == TableCopyState.Ready && t.Rows == 5000);
        (await _green.ScalarAsync<long>("SELECT COUNT(*) FROM app.orders")).ShouldBe(5000);
        (await _green.ScalarAsync<long>("SELECT COUNT(*) FROM app.audit")).ShouldBe(5000, "the trigger was created after the rows: it did not fire on the copy");
        (await _green.ScalarAsync<long>("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'app'")).ShouldBe(1);
        (await _green.ScalarAsync<long>("SELECT app.twice(21)")).ShouldBe(42);
        (await _green.ScalarAsync<long>("SELECT COUNT(*) FROM app.big_orders")).ShouldBe(await _blue.ScalarAsync<long>("SELECT COUNT(*) FROM app.big_orders"));
        (await _green.ScalarAsync<long>("SELECT @@global.read_only")).ShouldBe(1, "green is fenced while it replicates");

        await _blue.ExecuteAsync("INSERT INTO app.orders (customer, amount) VALUES ('late', 1.5); ALTER TABLE app.orders ADD COLUMN note VARCHAR(20); CREATE TABLE app.later (id INT PRIMARY KEY) ENGINE=InnoDB; INSERT INTO app.later VALUES (1), (2)");
        snapshot = await LinkKit.WaitForAsync(
            async () => { await link.WriteHeartbeatAsync(CancellationToken.None); return await link.ReadStatusAsync(CancellationToken.None); },
            s => s.LagTransactions == 0 && s.ReplicatedDdl.Count >= 2,
            TimeSpan.FromSeconds(60));

        snapshot.State.ShouldBe(ReplicationState.Replicating, "DDL replicates through the binlog: not DEGRADED");
        snapshot.ReplicatedDdl.Select(d => d.CommandTag).ShouldBe(["ALTER TABLE", "CREATE TABLE"]);
        snapshot.LagTransactions.ShouldBe(0);
        snapshot.LagBytes.ShouldNotBeNull();
        snapshot.LagSeconds.ShouldNotBeNull();
        (await _green.ScalarAsync<long>("SELECT COUNT(*) FROM app.later")).ShouldBe(2);
        (await _green.ScalarAsync<long>("SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = 'orders' AND COLUMN_NAME = 'note'")).ShouldBe(1);

        // Under writes, verify still compares one position: blue's snapshot and green stopped at it.
        using var load = new CancellationTokenSource();
        var writer = WriteUntilAsync(load.Token);
        var verify = await link.VerifyAsync(null, CancellationToken.None);
        await load.CancelAsync();
        await writer;

        verify.Matches.ShouldBeTrue(string.Join("; ", verify.Tables.Where(t => !t.Matches).Select(t => t.Table)));
        verify.Position.ShouldNotBeNullOrEmpty();
        verify.Tables.ShouldContain(t => t.Table == "app.orders" && t.BlueRows > 5000);

        // A row changed on green only (Teal's account, unlogged) is a difference verify must find.
        await using (var green = await _green.OpenAsync())
        {
            await using var change = new MySqlCommand("SET SESSION sql_log_bin = 0; UPDATE app.orders SET amount = amount + 1 WHERE id = 10", green);
            await change.ExecuteNonQueryAsync();
        }

        var after = await link.VerifyAsync(null, CancellationToken.None);
        after.Matches.ShouldBeFalse();
        after.Tables.Single(t => t.Table == "app.orders").DifferentChunks.ShouldBe(1);
        (await WaitReplicatingAsync(link)).State.ShouldBe(ReplicationState.Replicating, "verify restarts green's replication");

        await link.RemoveAsync(CancellationToken.None);
        (await _green.ScalarAsync<long>("SELECT @@global.read_only")).ShouldBe(0, "remove lifts green's fence");
        (await _blue.ScalarAsync<long>($"SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'teal\\_%'")).ShouldBe(0);
    }

    [Fact]
    public async Task Prerequisites_ReportEveryProblemWithItsFix()
    {
        await _blue.ExecuteAsync(
            """
            CREATE TABLE app.nokey (v INT) ENGINE=InnoDB;
            CREATE TABLE app.legacy (id INT PRIMARY KEY) ENGINE=MyISAM;
            SET GLOBAL binlog_format = 'STATEMENT';
            SET GLOBAL binlog_row_image = 'MINIMAL';
            SET GLOBAL binlog_expire_logs_seconds = 600;
            """);
        await _green.ExecuteAsync("CREATE DATABASE leftover");
        await using var link = LinkKit.Link(_blue, _green);

        var report = await link.CheckPrerequisitesAsync(CancellationToken.None);

        var failed = report.Failures.ToDictionary(f => f.Name);
        failed.Keys.ShouldBe(["blue-binlog-format", "blue-binlog-row-image", "binlog-retention", "primary-keys", "storage-engines", "green-empty"], ignoreOrder: true);
        failed["primary-keys"].Message.ShouldContain("app.nokey");
        failed["storage-engines"].Message.ShouldContain("app.legacy (MyISAM)");
        failed["blue-binlog-format"].Hint!.ShouldContain("binlog_format = 'ROW'");
        failed["green-empty"].Message.ShouldContain("leftover");
        report.Results.Count.ShouldBeGreaterThan(failed.Count, "passing checks are reported too");
    }

    [Fact]
    public async Task AutoIncrementCheck_RaisesOnlyACounterOfGreensNotAboveBluesLargestValue_Unlogged()
    {
        await using var link = LinkKit.Link(_blue, _green);
        await link.CopySchemaAsync(CancellationToken.None);
        await link.StartReplicationAsync(CancellationToken.None);
        (await WaitReplicatingAsync(link)).State.ShouldBe(ReplicationState.Replicating);
        // A view over a table with an AUTO_INCREMENT column: it has no counter of its own.
        await _blue.ExecuteAsync("CREATE VIEW app.audit_view AS SELECT * FROM app.audit");
        var blueAudit = await _blue.ScalarAsync<long>("SELECT MAX(id) FROM app.audit");
        var blueOrders = await _blue.ScalarAsync<long>("SELECT MAX(id) FROM app.orders");

        // A counter of green's behind blue's rows (rows gone on green only, its counter moved
        // back to them): green's next insert would reuse an id blue gave out.
        await using (var green = await _green.OpenAsync())
        {
            await using var back = new MySqlCommand("SET SESSION sql_log_bin = 0; DELETE FROM app.audit WHERE id > 100; ALTER TABLE app.audit AUTO_INCREMENT = 101", green);
            await back.ExecuteNonQueryAsync();
        }

        var gtidBefore = await _green.ScalarAsync<string>("SELECT @@global.gtid_binlog_pos");
        var synced = await link.SyncSequencesAsync(CancellationToken.None);

        synced.Single(s => s.Sequence == "app.audit.id").ShouldBe(new SequenceSync("app.audit.id", blueAudit, 101, blueAudit + 1));
        var orders = synced.Single(s => s.Sequence == "app.orders.id");
        orders.BlueValue.ShouldBe(blueOrders);
        orders.GreenValueAfter.ShouldBe(orders.GreenValueBefore, "a counter above blue's rows is left alone");
        orders.GreenValueBefore!.Value.ShouldBeGreaterThan(blueOrders);
        synced.ShouldNotContain(s => s.Sequence.StartsWith("app.audit_view.", StringComparison.Ordinal), "a view is no table");
        (await _green.ScalarAsync<long>("SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = 'audit'")).ShouldBe(blueAudit + 1);
        (await _green.ScalarAsync<string>("SELECT @@global.gtid_binlog_pos")).ShouldBe(gtidBefore, "green's own setting: nothing of it in its binlog");
    }

    private async Task WriteUntilAsync(CancellationToken cancellationToken)
    {
        await using var app = await _blue.OpenAsync(user: "app", password: "app-pw", cancellationToken: CancellationToken.None);
        while (!cancellationToken.IsCancellationRequested)
        {
            await using var insert = new MySqlCommand("INSERT INTO app.orders (customer, amount) VALUES ('load', 3.5)", app);
            await insert.ExecuteNonQueryAsync(CancellationToken.None);
        }
    }

    private static Task<ReplicationSnapshot> WaitReplicatingAsync(MySqlReplicationLink link) =>
        LinkKit.WaitForAsync(
            async () => { await link.WriteHeartbeatAsync(CancellationToken.None); return await link.ReadStatusAsync(CancellationToken.None); },
            s => s.State is ReplicationState.Replicating or ReplicationState.Stopped && s.Tables.All(t => t.State == TableCopyState.Ready),
            TimeSpan.FromSeconds(120));
}
