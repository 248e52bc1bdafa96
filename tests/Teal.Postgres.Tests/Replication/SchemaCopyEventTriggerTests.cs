using Teal.Postgres.Replication;
using Teal.Testing;

namespace Teal.Postgres.Tests.Replication;

/// <summary>
/// Blue's schema copy leaves out Teal's DDL-capture event triggers: they belong to no schema, so
/// excluding the teal schema kept them and the restore failed on their missing function.
/// </summary>
public sealed class SchemaCopyEventTriggerTests(RoomyBlueGreenFixture servers) : IClassFixture<RoomyBlueGreenFixture>
{
    [Fact]
    public async Task CopySchema_BlueHoldsAnotherDeploymentsEventTriggers_CopiesWithoutThem()
    {
        var db = LinkTestKit.NewName("again");
        await LinkTestKit.CreateDatabaseAsync(servers.Blue, db, "CREATE TABLE items (id int PRIMARY KEY, note text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g;");
        await using var first = LinkTestKit.Link(servers.Blue, servers.Green, db, LinkTestKit.NewName("teal"));
        await LinkTestKit.StartAsync(first);
        (await servers.Blue.ScalarAsync<long>("SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'teal%'", db)).ShouldBe(2);
        await using var otherGreen = await PostgresServer.StartAsync("15", LinkTestKit.Roomy);
        await using var second = LinkTestKit.Link(servers.Blue, otherGreen, db, LinkTestKit.NewName("teal"));

        await second.CopySchemaAsync(default);

        (await otherGreen.ScalarAsync<long>("SELECT count(*) FROM pg_event_trigger", db)).ShouldBe(0);
        (await otherGreen.ScalarAsync<long>("SELECT count(*) FROM pg_class WHERE relname = 'items'", db)).ShouldBe(1);
        await first.RemoveAsync(default);
    }

    [Fact]
    public void WithoutTealEventTriggers_DropsOnlyTealsTriggersAndTheirStatements()
    {
        var dump = """
            CREATE TABLE public.items (id integer NOT NULL);

            CREATE EVENT TRIGGER teal_abc_ddl_end ON ddl_command_end
               EXECUTE FUNCTION teal.teal_abc_record_ddl();


            ALTER EVENT TRIGGER teal_abc_ddl_end OWNER TO postgres;

            CREATE EVENT TRIGGER audit ON ddl_command_end
               EXECUTE FUNCTION public.audit_ddl();

            ALTER EVENT TRIGGER audit OWNER TO postgres;
            """;

        var kept = SchemaCopy.WithoutTealEventTriggers(dump);

        kept.ShouldNotContain("teal_abc");
        kept.ShouldContain("CREATE TABLE public.items");
        kept.ShouldContain("CREATE EVENT TRIGGER audit ON ddl_command_end\n   EXECUTE FUNCTION public.audit_ddl();");
        kept.ShouldContain("ALTER EVENT TRIGGER audit OWNER TO postgres;");
    }
}
