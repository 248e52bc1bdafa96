using Teal.Core.Engines;
using Teal.Testing;

namespace Teal.Postgres.Tests.Replication;

/// <summary>
/// PostgreSQL 15 → 16, with blue's roles copied (a table owned by an application role) and
/// green's expected version and parameters checked by verify.
/// </summary>
public sealed class Postgres16GreenTests
{
    private const string Db = "app";

    [Fact]
    public async Task Deployment15To16_CopiesRolesAndOwnership_ReplicatesAndVerifiesSettings()
    {
        var blueStart = PostgresServer.StartAsync("15");
        var greenStart = PostgresServer.StartAsync("16", new Dictionary<string, string> { ["work_mem"] = "8MB" });
        await using var blue = await blueStart;
        await using var green = await greenStart;
        await blue.ExecuteAsync("CREATE ROLE app_owner LOGIN PASSWORD 'secret-owner'; CREATE ROLE app_reader NOLOGIN;");
        await LinkTestKit.CreateDatabaseAsync(blue, Db);
        await blue.ExecuteAsync(
            """
            CREATE TABLE accounts (id bigserial PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL DEFAULT 0);
            ALTER TABLE accounts OWNER TO app_owner;
            GRANT SELECT ON accounts TO app_reader;
            INSERT INTO accounts (owner, balance) SELECT 'o' || g, g FROM generate_series(1, 2000) g;
            """,
            Db);

        var name = LinkTestKit.NewName("teal");
        var spec = new LinkSpec(name, LinkTestKit.Connection(blue, Db), LinkTestKit.Connection(green, Db))
        {
            CopyRoles = true,
            ExpectedGreenVersion = "16",
            ExpectedGreenParameters = new Dictionary<string, string> { ["work_mem"] = "8192kB", ["max_connections"] = "200", ["shared_buffers"] = "128MB" },
        };
        await using var link = LinkTestKit.Link(blue, green, Db, name, spec);
        await LinkTestKit.StartAsync(link);

        (await green.ScalarAsync<string>("SELECT tableowner FROM pg_tables WHERE tablename = 'accounts'", Db)).ShouldBe("app_owner");
        (await green.ScalarAsync<bool>("SELECT has_table_privilege('app_reader', 'accounts', 'SELECT')", Db)).ShouldBeTrue();
        // The role's password came along (SCRAM verifier), so applications log in to green as
        // before once green is open (as at switchover; until then the fence keeps them out).
        await link.UnfenceAsync(Side.Green, default);
        await using (var asOwner = new Npgsql.NpgsqlConnection(green.ConnectionString(Db, "app_owner", "secret-owner")))
        {
            await asOwner.OpenAsync();
        }

        await blue.ExecuteAsync("UPDATE accounts SET balance = balance * 2 WHERE id % 10 = 0; DELETE FROM accounts WHERE id > 1990", Db);
        var report = await link.VerifyAsync(null, default);
        report.Tables.ShouldAllBe(t => t.Matches);
        report.Tables.Single().GreenRows.ShouldBe(1990);
        report.Settings.Single(s => s.Name == "server_version").Matches.ShouldBeTrue();
        report.Settings.Single(s => s.Name == "work_mem").Matches.ShouldBeTrue();
        report.Settings.Single(s => s.Name == "max_connections").Matches.ShouldBeTrue();
        var sharedBuffers = report.Settings.Single(s => s.Name == "shared_buffers");
        sharedBuffers.Matches.ShouldBeFalse();
        sharedBuffers.Actual.ShouldBe("64MB");
        report.Matches.ShouldBeFalse();

        await link.RemoveAsync(default);
        (await blue.ScalarAsync<long>("SELECT count(*) FROM pg_replication_slots")).ShouldBe(0);
    }
}
