using Teal.Postgres.Replication;

namespace Teal.Postgres.Tests.Replication;

/// <summary>Cutting a client's query into statements and giving each recorded DDL command its own.</summary>
public sealed class DdlStatementsTests
{
    private static readonly DateTimeOffset At = new(2026, 12, 4, 12, 0, 0, TimeSpan.Zero);

    [Fact]
    public void Split_SemicolonsInsideQuotesCommentsAndDollarQuotes_DoNotCut()
    {
        const string query = """
            CREATE TABLE "a;b" (v text DEFAULT 'x;y', w text DEFAULT E'it\'s;'); -- a comment; still a comment
            /* block; /* nested; */ still */ CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $fn$ SELECT 1; $fn$;
            INSERT INTO "a;b" VALUES ($$;$$, 'z');
            """;

        var statements = DdlStatements.Split(query);

        statements.Count.ShouldBe(3);
        statements[0].ShouldStartWith("CREATE TABLE \"a;b\"");
        statements[0].ShouldEndWith("DEFAULT E'it\\'s;')");
        statements[1].ShouldContain("CREATE FUNCTION f()");
        statements[1].ShouldEndWith("$fn$ SELECT 1; $fn$");
        statements[2].ShouldStartWith("INSERT INTO");
    }

    [Fact]
    public void Assign_CreateTableFollowedByInsertSelect_KeepsOnlyTheCreate()
    {
        const string query = "CREATE TABLE notes (id int PRIMARY KEY); INSERT INTO notes SELECT g FROM generate_series(1, 10) g";

        var entry = DdlStatements.Assign([Row(1, "CREATE TABLE", query)]).ShouldHaveSingleItem();

        entry.Statement.ShouldBe("CREATE TABLE notes (id int PRIMARY KEY)");
        entry.Replayable.ShouldBeTrue();
    }

    [Fact]
    public void Assign_SeveralCommandsOfOneQuery_EachGetsItsOwnStatement_TemporaryOnesSkipped()
    {
        const string query = "CREATE TEMP TABLE t1 (a int); CREATE TABLE t2 (a int); UPDATE x SET a = 1; CREATE UNIQUE INDEX t2_a ON t2 (a); ALTER TABLE t2 ADD COLUMN b text";

        var entries = DdlStatements.Assign([Row(1, "CREATE TABLE", query), Row(2, "CREATE INDEX", query), Row(3, "ALTER TABLE", query)]);

        entries.Select(e => e.Statement).ShouldBe(["CREATE TABLE t2 (a int)", "CREATE UNIQUE INDEX t2_a ON t2 (a)", "ALTER TABLE t2 ADD COLUMN b text"]);
        entries.ShouldAllBe(e => e.Replayable);
    }

    [Fact]
    public void Assign_DdlRunInsideAFunction_IsKeptWholeAndNotReplayable()
    {
        var entry = DdlStatements.Assign([Row(1, "CREATE TABLE", "SELECT make_next_partition()")]).ShouldHaveSingleItem();

        entry.Statement.ShouldBe("SELECT make_next_partition()");
        entry.Replayable.ShouldBeFalse();
    }

    [Theory]
    [InlineData("CREATE OR REPLACE VIEW v AS SELECT 1", "CREATE VIEW", true)]
    [InlineData("create unlogged table u (a int)", "CREATE TABLE", true)]
    [InlineData("CREATE TABLE s AS SELECT 1", "CREATE TABLE AS", true)]
    [InlineData("CREATE MATERIALIZED VIEW m AS SELECT 1", "CREATE MATERIALIZED VIEW", true)]
    [InlineData("CREATE MATERIALIZED VIEW m AS SELECT 1", "CREATE VIEW", false)]
    [InlineData("GRANT SELECT ON t TO r", "GRANT", true)]
    [InlineData("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO r", "ALTER DEFAULT PRIVILEGES", true)]
    [InlineData("CREATE TEMP TABLE t (a int)", "CREATE TABLE", false)]
    public void MatchesTag_StatementAndCommandTag(string statement, string tag, bool matches) =>
        DdlStatements.MatchesTag(statement, tag).ShouldBe(matches);

    [Theory]
    [InlineData("ALTER TABLE orders ADD COLUMN vip boolean DEFAULT false", "vip")]
    [InlineData("alter table if exists public.\"Orders\" add \"VIP\" int", "VIP")]
    [InlineData("ALTER TABLE orders ADD COLUMN IF NOT EXISTS Note text", "note")]
    [InlineData("ALTER TABLE orders ADD COLUMN a int, ADD COLUMN b int", null)]
    [InlineData("ALTER TABLE orders ADD CONSTRAINT c CHECK (qty > 0)", null)]
    [InlineData("ALTER TABLE orders ALTER COLUMN qty TYPE bigint", null)]
    public void AddColumn_OnlyALoneAddColumnClause(string statement, string? column) =>
        DdlLog.AddColumn(statement).ShouldBe(column);

    [Fact]
    public void LastApplyError_FindsTheReplicationWorkersError()
    {
        const string log = """
            2026-12-04 12:00:00.000 UTC [101] app@shop ERROR:  relation "nope" does not exist
            2026-12-04 12:00:01.000 UTC [202] ERROR:  logical replication target relation "public.orders" is missing replicated column: "vip"
            2026-12-04 12:00:01.000 UTC [202] CONTEXT:  processing remote data for replication origin "pg_16390" during message type "INSERT" in transaction 771
            2026-12-04 12:00:06.000 UTC [203] ERROR:  no partition of relation "events" found for row
            2026-12-04 12:00:06.000 UTC [203] DETAIL:  Partition key of the failing row contains (at) = (2027-01-05).
            2026-12-04 12:00:07.000 UTC [101] app@shop ERROR:  syntax error at or near "x"
            """;

        StatusReader.LastApplyError(log).ShouldBe("logical replication target relation \"public.orders\" is missing replicated column: \"vip\"");
        StatusReader.LastApplyError(log + "\n2026-12-04 12:00:08.000 UTC [204] ERROR:  no partition of relation \"events\" found for row\n2026-12-04 12:00:08.000 UTC [204] DETAIL:  Partition key of the failing row contains (at) = (2027-01-05).\n2026-12-04 12:00:08.000 UTC [204] CONTEXT:  processing remote data for replication origin \"pg_16390\" during message type \"INSERT\"\n")
            .ShouldBe("no partition of relation \"events\" found for row");
    }

    private static DdlStatements.Row Row(long id, string tag, string query) =>
        new(id, At, tag, query, Xid: 700, QueryStart: At, SearchPath: "\"$user\", public", Objects: null, Acknowledged: false);
}
