using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.Core.Guardrails;
using Teal.Postgres.Replication;
using Teal.Testing;

namespace Teal.Postgres.Tests.Replication;

/// <summary>
/// Blue registered with a role that is not a superuser (as on hosted PostgreSQL): the operator
/// creates Teal's role <c>teal_control</c> with only what create and replication need, the
/// prerequisites name each missing privilege with the statement that grants it, and the create
/// path runs with nothing more; the switchover's hard fence still needs a superuser and says so.
/// </summary>
public sealed class LeastPrivilegeTests
{
    private const string Db = "lp";
    private const string Password = "teal-role-secret-7";

    [Fact]
    public async Task NonSuperuserBlue_PrerequisitesNameEachGrant_ThenCreateReplicatesAndVerifies()
    {
        var blueStart = PostgresServer.StartAsync("15");
        var greenStart = PostgresServer.StartAsync("17");
        await using var blue = await blueStart;
        await using var green = await greenStart;
        await LinkTestKit.CreateDatabaseAsync(
            blue,
            Db,
            """
            CREATE ROLE app NOLOGIN;
            CREATE TABLE orders (id bigserial PRIMARY KEY, customer int NOT NULL, note text);
            CREATE TABLE lines (order_id bigint NOT NULL REFERENCES orders, n int NOT NULL, PRIMARY KEY (order_id, n));
            ALTER TABLE orders OWNER TO app;
            ALTER TABLE lines OWNER TO app;
            INSERT INTO orders (customer, note) SELECT g % 50, 'n' || g FROM generate_series(1, 3000) g;
            INSERT INTO lines SELECT id, 1 FROM orders;
            """);
        await blue.ExecuteAsync($"CREATE ROLE teal_control LOGIN PASSWORD '{Password}'");
        // The tables' owner must exist on green for the schema copy (role copy needs a superuser on blue).
        await green.ExecuteAsync("CREATE ROLE app NOLOGIN");

        var name = LinkTestKit.NewName("teal");
        var spec = new LinkSpec(name, new ConnectionInfo(blue.Host, blue.Port, PostgresServer.ControlRole, Password, Db), LinkTestKit.Connection(green, Db))
        {
            GreenControlPassword = green.ControlPassword,
        };

        await using (var bare = new PostgresReplicationLink(spec, TestDirectories.Catalog, TimeProvider.System))
        {
            var refused = await bare.CheckPrerequisitesAsync(default);
            var privileges = refused.Failures.ShouldHaveSingleItem(string.Join("; ", refused.Failures.Select(f => f.Name + ": " + f.Message)));
            privileges.Name.ShouldBe("blue.privileges");
            privileges.Message.ShouldContain("REPLICATION");
            privileges.Message.ShouldContain("CREATE on database lp");
            privileges.Message.ShouldContain("SELECT on 2 table(s)");
            privileges.Message.ShouldContain("ownership of 2 table(s)");
            privileges.Hint!.ShouldContain("ALTER ROLE \"teal_control\" REPLICATION");
            privileges.Hint!.ShouldContain("GRANT CREATE ON DATABASE \"lp\" TO \"teal_control\"");
            privileges.Hint!.ShouldContain("GRANT pg_read_all_data TO \"teal_control\"");
            privileges.Hint!.ShouldContain("GRANT \"app\" TO \"teal_control\"");
        }

        // Exactly the statements the hint named, run by blue's superuser.
        await blue.ExecuteAsync("ALTER ROLE teal_control REPLICATION; GRANT CREATE ON DATABASE lp TO teal_control; GRANT pg_read_all_data TO teal_control; GRANT app TO teal_control;");
        await using var link = new PostgresReplicationLink(spec, TestDirectories.Catalog, TimeProvider.System);
        var report = await link.CheckPrerequisitesAsync(default);
        report.Failures.ShouldBeEmpty(string.Join("; ", report.Failures.Select(f => f.Name + ": " + f.Message)));
        report.Results.Single(r => r.Name == "blue.privileges").Outcome.ShouldBe(CheckOutcome.Pass);
        var warning = report.Results.Single(r => r.Name == "blue.superuser");
        warning.Outcome.ShouldBe(CheckOutcome.Warn);
        warning.Message.ShouldContain("DDL");

        await link.CopySchemaAsync(default);
        await link.StartReplicationAsync(default);
        await LinkTestKit.WaitForStateAsync(link, ReplicationState.Replicating, TimeSpan.FromSeconds(120));
        await link.PrepareGreenAsync(null, default);

        // Teal stayed within what it was given: a publication listing the tables, no event trigger.
        (await blue.ScalarAsync<bool>("SELECT rolsuper FROM pg_roles WHERE rolname = 'teal_control'")).ShouldBeFalse();
        (await blue.ScalarAsync<bool>($"SELECT puballtables FROM pg_publication WHERE pubname = '{name}'", Db)).ShouldBeFalse();
        (await blue.ScalarAsync<long>("SELECT count(*) FROM pg_event_trigger", Db)).ShouldBe(0);

        await blue.ExecuteAsync("INSERT INTO orders (customer, note) SELECT 7, 'late' FROM generate_series(1, 200); UPDATE orders SET note = 'changed' WHERE id <= 100; INSERT INTO lines SELECT id, 2 FROM orders WHERE id <= 10", Db);
        var verify = await link.VerifyAsync(null, default);
        verify.Tables.ShouldAllBe(t => t.Matches);
        verify.Tables.Single(t => t.Table == "public.orders").GreenRows.ShouldBe(3200);
        verify.Tables.Single(t => t.Table == "public.lines").GreenRows.ShouldBe(3010);

        // The hard fence takes LOGIN from superusers and ends their sessions: only a superuser can.
        var guard = await link.CheckSwitchoverAsync(new SwitchoverGuardrailOptions(TimeSpan.FromSeconds(60)), default);
        var fence = guard.Results.Single(r => r.Name == "blue.fence-privileges");
        fence.Outcome.ShouldBe(CheckOutcome.Fail);
        fence.Hint!.ShouldContain("ALTER ROLE teal_control SUPERUSER");
        guard.Results.Single(r => r.Name == "green.statistics").Outcome.ShouldBe(CheckOutcome.Pass);

        await link.RemoveAsync(default);
        (await blue.ScalarAsync<long>($"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{name}'")).ShouldBe(0);
        (await blue.ScalarAsync<long>($"SELECT count(*) FROM pg_publication WHERE pubname = '{name}'", Db)).ShouldBe(0);
    }
}
