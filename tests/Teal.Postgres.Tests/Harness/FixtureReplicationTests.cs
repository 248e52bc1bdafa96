using Teal.Testing;

namespace Teal.Postgres.Tests.Harness;

/// <summary>
/// Proves the harness gives real servers of the versions Teal upgrades between: a PostgreSQL 15
/// publication feeding a PostgreSQL 17 subscription carries inserts, updates and deletes.
/// </summary>
public sealed class FixtureReplicationTests(BlueGreenFixture servers) : IClassFixture<BlueGreenFixture>
{
    [Fact]
    public async Task Fixtures_StartTheRequestedVersionsWithLogicalWal()
    {
        servers.Blue.MajorVersion.ShouldBe(15);
        servers.Green.MajorVersion.ShouldBe(17);
        (await servers.Blue.ScalarAsync<string>("SHOW server_version")).ShouldStartWith("15.");
        (await servers.Green.ScalarAsync<string>("SHOW server_version")).ShouldStartWith("17.");
        (await servers.Blue.ScalarAsync<string>("SHOW wal_level")).ShouldBe("logical");
        servers.Blue.Port.ShouldNotBe(servers.Green.Port);
    }

    [Fact]
    public async Task PublicationOn15_ReplicatesInsertsUpdatesAndDeletesTo17()
    {
        const string table = "CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL)";
        await servers.Blue.ExecuteAsync(table);
        await servers.Green.ExecuteAsync(table);
        await servers.Blue.ExecuteAsync("INSERT INTO accounts SELECT g, 'owner' || g, g * 10 FROM generate_series(1, 1000) g");
        await servers.Blue.ExecuteAsync("CREATE PUBLICATION harness_pub FOR TABLE accounts");
        await servers.Green.ExecuteAsync(
            $"CREATE SUBSCRIPTION harness_sub CONNECTION '{servers.Blue.Conninfo().Replace("'", "''", StringComparison.Ordinal)}' PUBLICATION harness_pub");

        await WaitUntilAsync(async () => await servers.Green.ScalarAsync<long>("SELECT count(*) FROM accounts") == 1000);

        await servers.Blue.ExecuteAsync("INSERT INTO accounts VALUES (1001, 'new', 5)");
        await servers.Blue.ExecuteAsync("UPDATE accounts SET balance = balance + 1 WHERE id <= 10");
        await servers.Blue.ExecuteAsync("DELETE FROM accounts WHERE id BETWEEN 500 AND 599");

        const string digest = "SELECT count(*) || ':' || sum(balance) || ':' || max(id) FROM accounts";
        var expected = await servers.Blue.ScalarAsync<string>(digest);
        expected.ShouldBe("901:4455515:1001");
        await WaitUntilAsync(async () => await servers.Green.ScalarAsync<string>(digest) == expected);

        await servers.Green.ExecuteAsync("DROP SUBSCRIPTION harness_sub");
        (await servers.Blue.ScalarAsync<long>("SELECT count(*) FROM pg_replication_slots")).ShouldBe(0);
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("replication did not catch up within 30 s");
            }

            await Task.Delay(50);
        }
    }
}
