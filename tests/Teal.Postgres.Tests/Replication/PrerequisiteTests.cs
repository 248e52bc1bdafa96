using Teal.Core.Guardrails;
using Teal.Testing;

namespace Teal.Postgres.Tests.Replication;

/// <summary>Each prerequisite refuses with its own message and fix; every check is reported.</summary>
public sealed class PrerequisiteTests(RoomyBlueGreenFixture servers) : IClassFixture<RoomyBlueGreenFixture>
{
    [Fact]
    public async Task TableWithoutKey_FailsNamingTheTableAndTheFix()
    {
        var db = LinkTestKit.NewName("pk");
        await LinkTestKit.CreateDatabaseAsync(servers.Blue, db, "CREATE TABLE keyed (id int PRIMARY KEY); CREATE TABLE loose (a int, b text); CREATE TABLE full_id (a int); ALTER TABLE full_id REPLICA IDENTITY FULL;");
        await using var link = LinkTestKit.Link(servers.Blue, servers.Green, db, LinkTestKit.NewName("teal"));

        var report = await link.CheckPrerequisitesAsync(default);

        var failure = report.Failures.ShouldHaveSingleItem();
        failure.Name.ShouldBe("blue.replica-identity");
        failure.Message.ShouldContain("public.loose");
        failure.Message.ShouldNotContain("full_id");
        failure.Hint.ShouldNotBeNull();
        failure.Hint.ShouldContain("ALTER TABLE \"public\".\"loose\" REPLICA IDENTITY FULL;");
        report.Results.Count.ShouldBeGreaterThan(10);
    }

    [Fact]
    public async Task WhatLogicalReplicationDoesNotCarry_IsWarnedWithTheFix_AndRefusesNothing()
    {
        var db = LinkTestKit.NewName("gaps");
        await LinkTestKit.CreateDatabaseAsync(
            servers.Blue,
            db,
            """
            CREATE TABLE t (id serial PRIMARY KEY, n bigint GENERATED ALWAYS AS IDENTITY);
            CREATE UNLOGGED TABLE cache (k text PRIMARY KEY, v text);
            CREATE SEQUENCE invoice_numbers;
            SELECT lo_from_bytea(0, 'scan');
            CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n FROM t;
            CREATE MATERIALIZED VIEW never_filled AS SELECT 1 AS one WITH NO DATA;
            CREATE EXTENSION citext;
            """);
        await using var link = LinkTestKit.Link(servers.Blue, servers.Green, db, LinkTestKit.NewName("teal"));

        var report = await link.CheckPrerequisitesAsync(default);

        report.Failures.ShouldBeEmpty();
        var warnings = report.Results.Where(r => r.Outcome == CheckOutcome.Warn).ToDictionary(r => r.Name);
        warnings.Keys.ShouldBe(["blue.unlogged-tables", "blue.large-objects", "blue.sequences", "blue.materialized-views"], ignoreOrder: true);
        warnings["blue.unlogged-tables"].Message.ShouldContain("public.cache");
        warnings["blue.unlogged-tables"].Hint!.ShouldContain("ALTER TABLE \"public\".\"cache\" SET LOGGED;");
        warnings["blue.large-objects"].Message.ShouldContain("1 large object");
        warnings["blue.large-objects"].Hint!.ShouldContain("pg_restore");
        // Serial and identity sequences belong to their columns; only the free one is named.
        warnings["blue.sequences"].Message.ShouldContain("public.invoice_numbers");
        warnings["blue.sequences"].Message.ShouldNotContain("t_id_seq");
        warnings["blue.sequences"].Message.ShouldNotContain("t_n_seq");
        warnings["blue.sequences"].Hint!.ShouldContain("OWNED BY");
        warnings["blue.materialized-views"].Message.ShouldContain("public.totals");
        warnings["blue.materialized-views"].Message.ShouldNotContain("never_filled");
        var extensions = report.Results.Single(r => r.Name == "green.extensions");
        extensions.Outcome.ShouldBe(CheckOutcome.Pass);
        extensions.Message.ShouldContain("citext " + await servers.Blue.ScalarAsync<string>("SELECT extversion FROM pg_extension WHERE extname = 'citext'", db));
    }

    [Fact]
    public async Task NonEmptyGreen_Fails()
    {
        var db = LinkTestKit.NewName("full");
        await LinkTestKit.CreateDatabaseAsync(servers.Blue, db, "CREATE TABLE t (id int PRIMARY KEY)");
        await LinkTestKit.CreateDatabaseAsync(servers.Green, db, "CREATE TABLE leftover (id int)");
        await using var link = LinkTestKit.Link(servers.Blue, servers.Green, db, LinkTestKit.NewName("teal"));

        var report = await link.CheckPrerequisitesAsync(default);

        var failure = report.Failures.ShouldHaveSingleItem();
        failure.Name.ShouldBe("green.empty");
        failure.Message.ShouldContain("public.leftover");
    }

    [Fact]
    public async Task BlueWithForeignPublicationOrSlot_FailsNamingThem()
    {
        var db = LinkTestKit.NewName("pub");
        await LinkTestKit.CreateDatabaseAsync(servers.Blue, db, "CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION cdc_feed FOR TABLE t;");
        var slot = LinkTestKit.NewName("debezium");
        await servers.Blue.ExecuteAsync($"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')", db);
        try
        {
            await using var link = LinkTestKit.Link(servers.Blue, servers.Green, db, LinkTestKit.NewName("teal"));
            var report = await link.CheckPrerequisitesAsync(default);

            var failure = report.Failures.ShouldHaveSingleItem();
            failure.Name.ShouldBe("blue.external-replication");
            failure.Message.ShouldContain("publication cdc_feed");
            failure.Message.ShouldContain($"logical slot {slot}");
        }
        finally
        {
            await servers.Blue.ExecuteAsync($"SELECT pg_drop_replication_slot('{slot}')");
        }
    }

    [Fact]
    public async Task HealthyPair_PassesEveryCheck_AndChangesNothing()
    {
        var db = LinkTestKit.NewName("ok");
        await LinkTestKit.CreateDatabaseAsync(servers.Blue, db, "CREATE TABLE t (id int PRIMARY KEY)");
        await using var link = LinkTestKit.Link(servers.Blue, servers.Green, db, LinkTestKit.NewName("teal"));

        var report = await link.CheckPrerequisitesAsync(default);

        report.Failures.ShouldBeEmpty();
        report.Results.Select(r => r.Name).ShouldContain("green.version");
        (await servers.Green.ScalarAsync<long>($"SELECT count(*) FROM pg_database WHERE datname = '{db}'")).ShouldBe(0);
        (await servers.Blue.ScalarAsync<long>("SELECT count(*) FROM pg_namespace WHERE nspname = 'teal'", db)).ShouldBe(0);
    }
}

/// <summary>wal_level on a blue that is not ready for logical replication: not set, then set but not active.</summary>
public sealed class WalLevelPrerequisiteTests
{
    [Fact]
    public async Task WalLevelReplica_Fails_ThenPendingRestart_FailsWithRestartHint()
    {
        await using var blue = await PostgresServer.StartAsync("15", new Dictionary<string, string> { ["wal_level"] = "replica" });
        await using var green = await PostgresServer.StartAsync("17");
        await using var link = LinkTestKit.Link(blue, green, "postgres", LinkTestKit.NewName("teal"));

        var notLogical = (await link.CheckPrerequisitesAsync(default)).Failures.ShouldHaveSingleItem();
        notLogical.Name.ShouldBe("blue.wal-level");
        notLogical.Message.ShouldContain("replica");
        notLogical.Hint.ShouldNotBeNull();
        notLogical.Hint.ShouldContain("ALTER SYSTEM SET wal_level = logical");

        await blue.ExecuteAsync("ALTER SYSTEM SET wal_level = logical");
        await blue.ExecuteAsync("SELECT pg_reload_conf()");
        CheckResult pending = notLogical;
        await LinkTestKit.WaitUntilAsync(
            async () => (pending = (await link.CheckPrerequisitesAsync(default)).Failures.Single()).Message.Contains("pending_restart", StringComparison.Ordinal),
            "pending_restart showing",
            10);
        pending.Hint.ShouldNotBeNull();
        pending.Hint.ShouldContain("restart blue");
    }
}
