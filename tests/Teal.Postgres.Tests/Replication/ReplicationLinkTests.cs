using Npgsql;
using Teal.Core.Deployments;
using Teal.Core.Engines;
using Xunit.Abstractions;

namespace Teal.Postgres.Tests.Replication;

/// <summary>
/// A realistic PostgreSQL 15 database replicated to 17 through the link: changes reach green
/// while green is fenced, DDL and new tables are caught, verify finds an injected difference,
/// and the switchover primitives (fence, drain, marker, sequences) do what the runbook needs.
/// Tests of this class share one deployment; each leaves it as it found it.
/// </summary>
public sealed class ReplicationLinkTests(ReplicatedDeploymentFixture deployment, ITestOutputHelper output) : IClassFixture<ReplicatedDeploymentFixture>
{
    private const string Db = ReplicatedDeploymentFixture.Database;

    [Fact]
    public async Task Create_RealisticSchema_CopiesEverythingAndReplicatesChangesOnEveryTable()
    {
        output.WriteLine($"create to REPLICATING: {deployment.CreateSeconds:0.0} s");
        (await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM big", Db)).ShouldBe(RealisticSchema.BigRows);
        (await deployment.Green.ScalarAsync<string>("SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = 'mood'::regtype", Db)).ShouldBe("sad,ok,happy");
        (await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM customer_orders", Db)).ShouldBe(1000);
        (await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM pg_trigger WHERE tgname = 'orders_touch'", Db)).ShouldBe(1);
        (await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass", Db)).ShouldBe(2);

        await deployment.Blue.ExecuteAsync(RealisticSchema.Changes, Db);
        var expected = await deployment.Blue.ScalarAsync<string>(RealisticSchema.Digest, Db);
        await LinkTestKit.WaitUntilAsync(async () => await deployment.Green.ScalarAsync<string>(RealisticSchema.Digest, Db) == expected, "changes reaching green");

        // Repeating the create steps changes nothing (resume after a crash).
        await deployment.Link.CopySchemaAsync(default);
        await deployment.Link.StartReplicationAsync(default);
        var snapshot = await LinkTestKit.WaitForStateAsync(deployment.Link, ReplicationState.Replicating, TimeSpan.FromSeconds(30));
        snapshot.WorkerRunning.ShouldBeTrue();
        snapshot.Tables.ShouldAllBe(t => t.State == TableCopyState.Ready);
        snapshot.Tables.Select(t => t.Table).ShouldContain("public.events");
        snapshot.LagBytes.ShouldNotBeNull();
        snapshot.LagSeconds.ShouldNotBeNull();
    }

    [Fact]
    public async Task Green_IsFencedForClients_WhileReplicationStillApplies()
    {
        // Green's own superuser cannot even log in while green replicates.
        var error = await LinkTestKit.TryWriteAsClientAsync(deployment.Green, Db, "INSERT INTO audit_log (message) VALUES ('client on green')");
        error.ShouldNotBeNull();
        error.SqlState.ShouldBe(PostgresErrorCodes.InvalidAuthorizationSpecification);

        await deployment.Blue.ExecuteAsync("INSERT INTO audit_log (message) VALUES ('through the fence')", Db);
        await LinkTestKit.WaitUntilAsync(async () => await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM audit_log WHERE message = 'through the fence'", Db) == 1, "apply on fenced green");
    }

    [Fact]
    public async Task Verify_AllTablesMatch_AtOnePosition_EachTableReportedOnce()
    {
        var reported = new ReportedTables();
        var report = await deployment.Link.VerifyAsync(reported, default);
        reported.Tables.Select(t => t.Table).ShouldBe(report.Tables.Select(t => t.Table), ignoreOrder: true);
        output.WriteLine($"verify: {report.RowsPerSide} rows per side in {report.Seconds:0.00} s = {report.RowsPerSecond:0} rows/s");
        foreach (var t in report.Tables)
        {
            output.WriteLine($"  {t.Table}: {t.BlueRows}/{t.GreenRows} chunks {t.Chunks} different {t.DifferentChunks} changing {t.ChangingChunks} {t.Problem}");
        }

        report.Tables.Where(t => !t.Matches).ShouldBeEmpty();
        // Other tests of this class may have added tables (coupons): these must be there.
        foreach (var table in new[] { "public.audit_log", "public.big", "public.customers", "public.events", "public.orders" })
        {
            report.Tables.Select(t => t.Table).ShouldContain(table);
        }

        report.Tables.Select(t => t.Table).ShouldNotContain("public.events_2025");
        report.Tables.Single(t => t.Table == "public.big").Chunks.ShouldBeGreaterThan(1);
        report.RowsPerSide.ShouldBeGreaterThanOrEqualTo(RealisticSchema.BigRows);
        report.Sequences.Select(s => s.Sequence).ShouldContain("public.orders_id_seq");
        report.Sequences.Select(s => s.Sequence).ShouldContain("public.customers_id_seq");
        report.Matches.ShouldBeTrue();
    }

    [Fact]
    public async Task Verify_UnderContinuousWritesOnBlue_ReportsNoFalseDifference()
    {
        using var stop = new CancellationTokenSource();
        var writes = 0;
        var writer = Task.Run(async () =>
        {
            await using var conn = await deployment.Blue.OpenAsync(Db);
            var random = new Random(7);
            while (!stop.IsCancellationRequested)
            {
                await using var cmd = new NpgsqlCommand($"UPDATE big SET v = v + 1 WHERE id = {random.Next(1, RealisticSchema.BigRows)}", conn);
                await cmd.ExecuteNonQueryAsync();
                writes++;
                await Task.Delay(2);
            }
        });
        try
        {
            var report = await deployment.Link.VerifyAsync(null, default);
            var big = report.Tables.Single(t => t.Table == "public.big");
            output.WriteLine($"under load ({writes} updates so far): big chunks {big.Chunks}, different {big.DifferentChunks}, changing {big.ChangingChunks}");
            big.DifferentChunks.ShouldBe(0);
            big.Matches.ShouldBeTrue();
            report.Tables.ShouldAllBe(t => t.Matches);
        }
        finally
        {
            await stop.CancelAsync();
            await writer;
        }

        writes.ShouldBeGreaterThan(10);
    }

    [Fact]
    public async Task Verify_RowChangedOnGreen_IsReportedAsDifferenceInThatTableOnly()
    {
        await Teal(deployment.Green, "UPDATE big SET note = 'tampered' WHERE id = 777777");
        try
        {
            var report = await deployment.Link.VerifyAsync(null, default);
            var big = report.Tables.Single(t => t.Table == "public.big");
            big.Matches.ShouldBeFalse();
            big.DifferentChunks.ShouldBe(1);
            big.ChangingChunks.ShouldBe(0);
            big.BlueRows.ShouldBe(big.GreenRows);
            big.BlueChecksum.ShouldNotBe(big.GreenChecksum);
            big.DifferingKeys.ShouldBe(["777777"]);
            report.Tables.Where(t => t.Table != "public.big").ShouldAllBe(t => t.Matches);
            report.Matches.ShouldBeFalse();
        }
        finally
        {
            var note = await deployment.Blue.ScalarAsync<string>("SELECT note FROM big WHERE id = 777777", Db);
            await Teal(deployment.Green, $"UPDATE big SET note = '{note}' WHERE id = 777777");
        }
    }

    [Fact]
    public async Task Verify_OneRowMissingAndOneExtraOnGreen_NamesBothKeys()
    {
        // The large table matches nowhere else: the first reading in block ranges differs, the
        // key ranges narrow it down, and the rows of the differing ranges name the keys.
        var row = await deployment.Blue.ScalarAsync<string>("SELECT v || ',' || coalesce(quote_literal(note), 'NULL') FROM big WHERE id = 4242", Db);
        await Teal(deployment.Green, "DELETE FROM big WHERE id = 4242");
        await Teal(deployment.Green, $"INSERT INTO big (id, v, note) VALUES ({RealisticSchema.BigRows + 4242}, 1, 'only on green')");
        try
        {
            var report = await deployment.Link.VerifyAsync(null, default);
            var big = report.Tables.Single(t => t.Table == "public.big");
            output.WriteLine($"big: {big.BlueRows}/{big.GreenRows}, chunks {big.Chunks}, different {big.DifferentChunks}, keys {string.Join(", ", big.DifferingKeys)}");
            big.Matches.ShouldBeFalse();
            big.DifferingKeys.ShouldBe(["4242", (RealisticSchema.BigRows + 4242).ToString(System.Globalization.CultureInfo.InvariantCulture)]);
            big.DifferentChunks.ShouldBe(2);
            report.Tables.Where(t => t.Table != "public.big").ShouldAllBe(t => t.Matches);
        }
        finally
        {
            await Teal(deployment.Green, $"DELETE FROM big WHERE id = {RealisticSchema.BigRows + 4242}");
            await Teal(deployment.Green, $"INSERT INTO big (id, v, note) VALUES (4242, {row})");
        }
    }

    [Fact]
    public async Task DdlOnBlue_DegradesReplicationWithTheStatement_UntilAcknowledged()
    {
        await deployment.Blue.ExecuteAsync("ALTER TABLE customers ADD COLUMN vip boolean", Db);
        var degraded = await LinkTestKit.WaitForStateAsync(deployment.Link, ReplicationState.Degraded, TimeSpan.FromSeconds(10));
        degraded.Reason.ShouldNotBeNull();
        degraded.Reason.ShouldContain("ALTER TABLE customers ADD COLUMN vip boolean");
        var ddl = degraded.PendingDdl.ShouldHaveSingleItem();
        ddl.CommandTag.ShouldBe("ALTER TABLE");

        var guardrails = await deployment.Link.CheckSwitchoverAsync(new SwitchoverGuardrailOptions(TimeSpan.FromSeconds(60)), default);
        guardrails.Failures.Select(f => f.Name).ShouldContain("replication.ddl");

        // The operator applies it on green, then acknowledges it.
        await Teal(deployment.Green, "ALTER TABLE customers ADD COLUMN vip boolean");
        await deployment.Link.AcknowledgeDdlAsync(ddl.Id, default);
        var healthy = await LinkTestKit.WaitForStateAsync(deployment.Link, ReplicationState.Replicating, TimeSpan.FromSeconds(10));
        healthy.PendingDdl.ShouldBeEmpty();
    }

    [Fact]
    public async Task CreateAndDropOnBlue_AreEachRecordedOnce_AndAckClearsBoth()
    {
        await deployment.Blue.ExecuteAsync("CREATE TABLE scratch (id int PRIMARY KEY)", Db);
        await deployment.Blue.ExecuteAsync("DROP TABLE scratch", Db);
        await deployment.Blue.ExecuteAsync("CREATE TEMP TABLE session_only (id int)", Db);

        var degraded = await LinkTestKit.WaitForStateAsync(deployment.Link, ReplicationState.Degraded, TimeSpan.FromSeconds(10));
        degraded.PendingDdl.Select(d => d.CommandTag).ShouldBe(["CREATE TABLE", "DROP TABLE"]);
        degraded.SkippedTables.ShouldBeEmpty();

        await deployment.Link.AcknowledgeDdlAsync(degraded.PendingDdl[^1].Id, default);
        (await LinkTestKit.WaitForStateAsync(deployment.Link, ReplicationState.Replicating, TimeSpan.FromSeconds(10))).PendingDdl.ShouldBeEmpty();
    }

    [Fact]
    public async Task SwitchoverGuardrails_RefuseALongWriteTransactionOnBlue()
    {
        await using var writer = await deployment.Blue.OpenAsync(Db);
        await using (var begin = new NpgsqlCommand("BEGIN; INSERT INTO audit_log (message) VALUES ('long writer')", writer))
        {
            await begin.ExecuteNonQueryAsync();
        }

        await Task.Delay(1200);
        var report = await deployment.Link.CheckSwitchoverAsync(new SwitchoverGuardrailOptions(TimeSpan.FromSeconds(300)) { LongTransactionThreshold = TimeSpan.FromSeconds(1) }, default);
        var failure = report.Failures.ShouldHaveSingleItem();
        failure.Name.ShouldBe("blue.long-transactions");
        failure.Message.ShouldContain("long writer");

        await using var rollback = new NpgsqlCommand("ROLLBACK", writer);
        await rollback.ExecuteNonQueryAsync();
    }

    [Fact]
    public async Task TableCreatedOnBlue_IsReportedSkipped_AndAddMissingTablesCopiesIt()
    {
        await deployment.Blue.ExecuteAsync("CREATE TABLE coupons (code text PRIMARY KEY, percent int NOT NULL)", Db);
        var degraded = await LinkTestKit.WaitForStateAsync(deployment.Link, ReplicationState.Degraded, TimeSpan.FromSeconds(10));
        degraded.SkippedTables.ShouldBe(["public.coupons"]);
        await deployment.Blue.ExecuteAsync("INSERT INTO coupons SELECT 'C' || g, g % 50 FROM generate_series(1, 500) g", Db);

        var added = await deployment.Link.AddMissingTablesAsync(default);
        added.ShouldBe(["public.coupons"]);
        await LinkTestKit.WaitUntilAsync(async () => await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM coupons", Db) == 500, "the new table's copy");
        // Once copied, the new table is vacuumed and analyzed on green as the initial copy was.
        // (A manual VACUUM: autovacuum would record last_autovacuum, and only analyzes 500 inserted rows.)
        await LinkTestKit.WaitUntilAsync(async () => await deployment.Green.ScalarAsync<bool>("SELECT last_vacuum IS NOT NULL AND last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relid = 'coupons'::regclass", Db), "the new table's VACUUM (ANALYZE) on green");
        await deployment.Blue.ExecuteAsync("INSERT INTO coupons VALUES ('LATE', 5)", Db);
        await LinkTestKit.WaitUntilAsync(async () => await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM coupons", Db) == 501, "a change to the new table");

        var snapshot = await deployment.Link.ReadStatusAsync(default);
        snapshot.SkippedTables.ShouldBeEmpty();
        // add-tables made the table on green: its CREATE TABLE needs no acknowledgement.
        snapshot.PendingDdl.ShouldBeEmpty();
        await LinkTestKit.WaitForStateAsync(deployment.Link, ReplicationState.Replicating, TimeSpan.FromSeconds(60));
    }

    [Fact]
    public async Task FenceBlue_RefusesPlainClientWrites_AndUnfenceRestoresThem()
    {
        await deployment.Blue.ExecuteAsync("CREATE ROLE app_writer LOGIN PASSWORD 'pw' SUPERUSER");
        await deployment.Blue.ExecuteAsync($"ALTER ROLE app_writer IN DATABASE {Db} SET default_transaction_read_only = off");
        try
        {
            var fence = System.Diagnostics.Stopwatch.StartNew();
            await deployment.Link.FenceAsync(Side.Blue, default);
            output.WriteLine($"fence took {fence.ElapsedMilliseconds} ms");

            // Clients cannot log in, the superuser Teal was registered with included.
            var error = await LinkTestKit.TryWriteAsClientAsync(deployment.Blue, Db, "INSERT INTO audit_log (message) VALUES ('while fenced')");
            error.ShouldNotBeNull();
            error.SqlState.ShouldBe(PostgresErrorCodes.InvalidAuthorizationSpecification);
            // A role whose own setting would keep it writable is fenced too.
            var writerError = await WriteAsAsync("app_writer", "pw", "INSERT INTO audit_log (message) VALUES ('app_writer while fenced')");
            writerError.ShouldNotBeNull();
            writerError.SqlState.ShouldBe(PostgresErrorCodes.InvalidAuthorizationSpecification);

            // Teal itself still writes (the marker), and it reaches green.
            var position = await deployment.Link.MarkFinalPositionAsync(default);
            await deployment.Link.WaitForPositionAsync(position, default);
        }
        finally
        {
            await deployment.Link.UnfenceAsync(Side.Blue, default);
        }

        (await LinkTestKit.TryWriteAsClientAsync(deployment.Blue, Db, "INSERT INTO audit_log (message) VALUES ('after unfence')")).ShouldBeNull();
        (await deployment.Blue.ScalarAsync<string>("SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting WHERE setrole = 'app_writer'::regrole"))
            .ShouldBe("default_transaction_read_only=off");
        await deployment.Blue.ExecuteAsync("DROP ROLE app_writer");
    }

    [Fact]
    public async Task Drain_TerminatesIdleInTransactionSessionAfterBudget_AndLetsQuickOnesFinish()
    {
        await using var stuck = await deployment.Blue.OpenAsync(Db);
        await using (var begin = new NpgsqlCommand("BEGIN; INSERT INTO audit_log (message) VALUES ('never committed')", stuck))
        {
            await begin.ExecuteNonQueryAsync();
        }

        await using var quick = await deployment.Blue.OpenAsync(Db);
        await using (var begin = new NpgsqlCommand("BEGIN; INSERT INTO audit_log (message) VALUES ('committed during drain')", quick))
        {
            await begin.ExecuteNonQueryAsync();
        }

        await deployment.Link.FenceAsync(Side.Blue, default);
        try
        {
            var started = System.Diagnostics.Stopwatch.StartNew();
            var drain = deployment.Link.DrainAsync(Side.Blue, TimeSpan.FromMilliseconds(1000), default);
            // Commit only once the drain has listed the transactions open at the fence (its query
            // is on blue): a commit before that is not one the drain let finish.
            var listed = System.Diagnostics.Stopwatch.StartNew();
            while (await deployment.Blue.ScalarAsync<long>("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%xact_start IS NOT NULL AND xact_start <=%' AND pid <> pg_backend_pid()") == 0)
            {
                listed.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(10), "the drain never listed the open transactions");
                await Task.Delay(2);
            }

            await using (var commit = new NpgsqlCommand("COMMIT", quick))
            {
                // Begun before the fence, so still read-write: it may finish within the budget.
                await commit.ExecuteNonQueryAsync();
            }

            var result = await drain;
            started.Elapsed.ShouldBeGreaterThanOrEqualTo(TimeSpan.FromMilliseconds(990));
            result.Terminated.ShouldBe(1);
            result.FinishedInTime.ShouldBe(1);
            // The quick one committed and then sat idle: a fenced side keeps no client session.
            result.ClosedIdle.ShouldBe(1);
        }
        finally
        {
            await deployment.Link.UnfenceAsync(Side.Blue, default);
        }

        (await deployment.Blue.ScalarAsync<long>("SELECT count(*) FROM audit_log WHERE message = 'committed during drain'", Db)).ShouldBe(1);

        await Should.ThrowAsync<Exception>(async () =>
        {
            await using var commit = new NpgsqlCommand("COMMIT", stuck);
            await commit.ExecuteNonQueryAsync();
        });
        (await deployment.Blue.ScalarAsync<long>("SELECT count(*) FROM audit_log WHERE message = 'never committed'", Db)).ShouldBe(0);
    }

    [Fact]
    public async Task MarkWaitAndSequenceSync_LeaveGreenSequencesEqualToBlue()
    {
        await deployment.Blue.ExecuteAsync("INSERT INTO orders (customer_id, qty) SELECT 1, 1 FROM generate_series(1, 37); INSERT INTO customers (name) VALUES ('seq')", Db);
        await deployment.Link.FenceAsync(Side.Blue, default);
        try
        {
            var position = await deployment.Link.MarkFinalPositionAsync(default);
            position.Details.ContainsKey("marker").ShouldBeTrue();
            await deployment.Link.WaitForPositionAsync(position, default);
            var synced = await deployment.Link.SyncSequencesAsync(default);
            synced.Select(s => s.Sequence).ShouldContain("public.orders_id_seq");
        }
        finally
        {
            await deployment.Link.UnfenceAsync(Side.Blue, default);
        }

        const string sequences = "SELECT string_agg(sequencename || '=' || coalesce(last_value::text, 'null'), ',' ORDER BY sequencename) FROM pg_sequences WHERE schemaname = 'public'";
        var blue = await deployment.Blue.ScalarAsync<string>(sequences, Db);
        (await deployment.Green.ScalarAsync<string>(sequences, Db)).ShouldBe(blue);
        blue.ShouldContain("orders_id_seq=");
    }

    [Fact]
    public async Task SwitchoverGuardrails_PassOnAHealthyDeployment_AndNameAClientOnGreen()
    {
        var report = await deployment.Link.CheckSwitchoverAsync(new SwitchoverGuardrailOptions(TimeSpan.FromSeconds(300)), default);
        report.Failures.ShouldBeEmpty(string.Join("; ", report.Failures.Select(f => f.Name + ": " + f.Message)));

        // Only someone who gave a role LOGIN back on fenced green can have a client there.
        await deployment.Green.ExecuteAsync("CREATE ROLE stray_client LOGIN PASSWORD 'stray'");
        try
        {
            await using var client = new NpgsqlConnection(deployment.Green.ConnectionString(Db, "stray_client", "stray"));
            await client.OpenAsync();
            var refused = await deployment.Link.CheckSwitchoverAsync(new SwitchoverGuardrailOptions(TimeSpan.FromSeconds(300)), default);
            refused.Failures.Select(f => f.Name).ShouldBe(["green.no-clients", "green.fence"], ignoreOrder: true);
            refused.Failures.Single(f => f.Name == "green.fence").Message.ShouldContain("stray_client");
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            await deployment.Green.ExecuteAsync("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'stray_client'");
            await LinkTestKit.WaitUntilAsync(async () => await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM pg_stat_activity WHERE usename = 'stray_client'") == 0, "the stray client's exit");
            await deployment.Green.ExecuteAsync("DROP ROLE stray_client");
        }
    }

    /// <summary>Collects progress reports as they happen (Progress&lt;T&gt; would post them later).</summary>
    private sealed class ReportedTables : IProgress<TableVerification>
    {
        private readonly Lock _gate = new();

        public List<TableVerification> Tables { get; } = [];

        public void Report(TableVerification value)
        {
            lock (_gate)
            {
                Tables.Add(value);
            }
        }
    }

    /// <summary>A write as Teal would do it (through a fence: as Teal's role, with its session settings).</summary>
    private static async Task Teal(Testing.PostgresServer server, string sql)
    {
        var builder = new NpgsqlConnectionStringBuilder(server.ConnectionString(Db, Testing.PostgresServer.ControlRole, server.ControlPassword)) { Options = "-c default_transaction_read_only=off", ApplicationName = "teal" };
        await using var conn = new NpgsqlConnection(builder.ConnectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, conn);
        await cmd.ExecuteNonQueryAsync();
    }

    private async Task<PostgresException?> WriteAsAsync(string user, string password, string sql)
    {
        return await LinkTestKit.TryWriteAsClientAsync(deployment.Blue, Db, sql, user, password);
    }
}
