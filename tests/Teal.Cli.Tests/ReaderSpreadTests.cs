using Npgsql;
using Teal.Postgres.Connections;
using Teal.Postgres.Instances;
using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Cli.Tests;

/// <summary>
/// A reader endpoint spreads new connections over every streaming reader of its instance, round
/// robin: one declared on a green with two readers before the switchover, and production's reader
/// endpoint, which moves to green's two readers at the switchover.
/// </summary>
public sealed class ReaderSpreadTests : IAsyncLifetime
{
    private const string ReaderRole = "app_reader";
    private const string ReaderPassword = "Reader-Pa55-sp";

    private TealHost _teal = null!; // Set in InitializeAsync, before any test runs.
    private PostgresServer _blue = null!; // Set in InitializeAsync.

    public async Task InitializeAsync()
    {
        _blue = await PostgresServer.StartAsync("15");
        _teal = await TealHost.StartAsync();
        await _blue.ExecuteAsync("CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g");
        await _blue.ExecuteAsync($"CREATE ROLE {ReaderRole} LOGIN PASSWORD '{ReaderPassword}'; GRANT SELECT ON items TO {ReaderRole}");
        (await Run("instance", "add", "app", "--connection", _blue.Uri())).ExitCode.ShouldBe(0);
    }

    public async Task DisposeAsync()
    {
        await _teal.DisposeAsync();
        await _blue.DisposeAsync();
    }

    [Fact]
    public async Task ReaderEndpoint_SpreadsOverBothReaders_BeforeAndAfterSwitchover()
    {
        var productionReads = ManagedPostgres.FreePort();
        (await Run("endpoint", "add", "reads", "--instance", "app", "--listen", $"127.0.0.1:{productionReads}", "--reader")).ExitCode.ShouldBe(0);
        var created = await Run("create", "spread", "--source", "app", "--target-readers", "2", "--wait");
        created.ExitCode.ShouldBe(0, created.ToString());
        var green = (await _teal.State.ListDeploymentsAsync(default)).ShouldHaveSingleItem().Green;
        var r1 = (await _teal.State.GetInstanceAsync($"{green}-r1", default))!;
        var r2 = (await _teal.State.GetInstanceAsync($"{green}-r2", default))!;

        // Before the switchover: a reader endpoint on green (fenced: only Teal's login reads there).
        var greenReads = ManagedPostgres.FreePort();
        (await Run("endpoint", "add", "green-reads", "--instance", green, "--listen", $"127.0.0.1:{greenReads}", "--reader")).ExitCode.ShouldBe(0);
        var teal = ConnectionStrings.Parse((await Run("instance", "url", r1.Name, "--as-teal")).Stdout.Trim());
        var before = await PortsThroughAsync(greenReads, teal.User, teal.Password!, 10);
        before.Count(p => p == r1.Port).ShouldBe(5, string.Join(",", before));
        before.Count(p => p == r2.Port).ShouldBe(5, string.Join(",", before));
        (await Run("endpoint", "remove", "green-reads")).ExitCode.ShouldBe(0);

        var switched = await Run("switchover", "spread", "--wait");

        switched.ExitCode.ShouldBe(0, switched.ToString());
        // The application's login reads on green's readers once they replayed green's unfence.
        await WaitUntilAsync(async () => (await PortsThroughAsync(productionReads, ReaderRole, ReaderPassword, 2)).All(p => p == r1.Port || p == r2.Port), "the application's login reads through the reader endpoint");
        var after = await PortsThroughAsync(productionReads, ReaderRole, ReaderPassword, 10);
        after.Count(p => p == r1.Port).ShouldBe(5, string.Join(",", after));
        after.Count(p => p == r2.Port).ShouldBe(5, string.Join(",", after));
    }

    [Fact]
    public async Task RemoveReaderByHand_DropsItsSlotOnGreen_AndItsCopyLeftGreensFenceDefaultOut()
    {
        var created = await Run("create", "gone", "--source", "app", "--target-readers", "1", "--wait");
        created.ExitCode.ShouldBe(0, created.ToString());
        var green = (await _teal.State.GetInstanceAsync((await _teal.State.ListDeploymentsAsync(default)).ShouldHaveSingleItem().Green, default))!;
        var reader = (await _teal.State.GetInstanceAsync($"{green.Name}-r1", default))!;
        // Green is fenced, its read-only default included; the reader is a copy of it, but a
        // standby is read-only by itself and must not keep that default once promoted.
        (await File.ReadAllTextAsync(Path.Combine(green.Managed!.Directory, "data", "postgresql.auto.conf"))).ShouldContain("default_transaction_read_only");
        (await File.ReadAllTextAsync(Path.Combine(reader.Managed!.Directory, "data", "postgresql.auto.conf"))).ShouldNotContain("default_transaction_read_only");
        (await SlotsOnAsync(green.Name, reader.ReplicationSlot!)).ShouldBe(1);

        var removed = await Run("instance", "remove", reader.Name, "--delete-data");

        removed.ExitCode.ShouldBe(0, removed.ToString());
        (await SlotsOnAsync(green.Name, reader.ReplicationSlot!)).ShouldBe(0);
        Directory.Exists(reader.Managed.Directory).ShouldBeFalse();
    }

    private async Task<long> SlotsOnAsync(string instance, string slot)
    {
        var url = (await Run("instance", "url", instance, "--as-teal")).Stdout.Trim();
        await using var conn = new NpgsqlConnection(PostgresConnections.Builder(ConnectionStrings.Parse(url), pooling: false).ConnectionString);
        await conn.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", conn);
        command.Parameters.AddWithValue(slot);
        return (long)(await command.ExecuteScalarAsync())!;
    }

    /// <summary>The server port behind each of <paramref name="count"/> new connections through the endpoint, one after another.</summary>
    private static async Task<List<int>> PortsThroughAsync(int endpointPort, string user, string password, int count)
    {
        var ports = new List<int>();
        for (var i = 0; i < count; i++)
        {
            var builder = new NpgsqlConnectionStringBuilder { Host = "127.0.0.1", Port = endpointPort, Username = user, Password = password, Database = "postgres", Pooling = false };
            await using var conn = new NpgsqlConnection(builder.ConnectionString);
            await conn.OpenAsync();
            await using var command = new NpgsqlCommand("SELECT current_setting('port')::int", conn);
            ports.Add((int)(await command.ExecuteScalarAsync())!);
        }

        return ports;
    }

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                if (await condition())
                {
                    return;
                }
            }
            catch (NpgsqlException)
            {
                // Not yet: a reader that has not replayed the unfence refuses the application's login.
            }

            await Task.Delay(500);
        }

        throw new TimeoutException($"timed out waiting until {what}");
    }

    private Task<CliRun> Run(params string[] args) =>
        CliRun.RunAsync([.. args, "--server", _teal.Url.ToString(), "--data-dir", _teal.DataDirectory]);
}
