using Npgsql;
using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.Postgres.Replication;
using Teal.Testing;

namespace Teal.Postgres.Tests.Replication;

/// <summary>Servers roomy enough for several deployments at once, and helpers shared by the link tests.</summary>
internal static class LinkTestKit
{
    /// <summary>Several deployments share one pair of servers in a test class: give them room.</summary>
    public static IReadOnlyDictionary<string, string> Roomy { get; } = new Dictionary<string, string>
    {
        ["max_replication_slots"] = "20",
        ["max_wal_senders"] = "20",
        ["max_logical_replication_workers"] = "16",
        ["max_worker_processes"] = "24",
    };

    public static ConnectionInfo Connection(PostgresServer server, string database) =>
        new(server.Host, server.Port, server.User, server.Password, database);

    public static PostgresReplicationLink Link(PostgresServer blue, PostgresServer green, string database, string name, LinkSpec? overrides = null, TimeProvider? time = null) =>
        new(Spec(blue, green, database, name, overrides), TestDirectories.Catalog, time ?? TimeProvider.System);

    public static LinkSpec Spec(PostgresServer blue, PostgresServer green, string database, string name, LinkSpec? overrides = null) =>
        (overrides ?? new LinkSpec(name, Connection(blue, database), Connection(green, database))) with
        {
            Name = name,
            Blue = Connection(blue, database),
            Green = Connection(green, database),
            // Teal's login role gets the superuser's password, so the harness can look at a
            // fenced server as Teal does (PostgresServer.OpenAsync).
            BlueControlPassword = blue.ControlPassword,
            GreenControlPassword = green.ControlPassword,
        };

    public static string NewName(string prefix) => $"{prefix}_{Guid.NewGuid():N}"[..(prefix.Length + 9)];

    public static async Task CreateDatabaseAsync(PostgresServer server, string database, string? schemaSql = null)
    {
        await server.ExecuteAsync($"CREATE DATABASE \"{database}\"");
        if (schemaSql is not null)
        {
            await server.ExecuteAsync(schemaSql, database);
        }
    }

    /// <summary>Create path of a deployment: prerequisites pass, schema copied, replication started, initial copy done, green vacuumed and analyzed.</summary>
    public static async Task StartAsync(PostgresReplicationLink link, TimeSpan? timeout = null)
    {
        var report = await link.CheckPrerequisitesAsync(default);
        report.Failures.ShouldBeEmpty(string.Join("; ", report.Failures.Select(f => f.Name + ": " + f.Message)));
        await link.CopySchemaAsync(default);
        await link.StartReplicationAsync(default);
        await WaitForStateAsync(link, ReplicationState.Replicating, timeout ?? TimeSpan.FromSeconds(120));
        await link.PrepareGreenAsync(null, default);
    }

    public static async Task<ReplicationSnapshot> WaitForStateAsync(PostgresReplicationLink link, ReplicationState state, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        ReplicationSnapshot snapshot;
        do
        {
            await link.WriteHeartbeatAsync(default);
            snapshot = await link.ReadStatusAsync(default);
            if (snapshot.State == state)
            {
                return snapshot;
            }

            await Task.Delay(100);
        }
        while (DateTime.UtcNow < deadline);
        throw new TimeoutException($"replication did not reach {state} within {timeout.TotalSeconds:0} s; last {snapshot.State}: {snapshot.Reason}");
    }

    public static async Task WaitUntilAsync(Func<Task<bool>> condition, string what, int seconds = 60)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"{what} did not happen within {seconds} s");
            }

            await Task.Delay(50);
        }
    }

    /// <summary>A write as Teal does it: as Teal's own login role, through a fence, and not recorded by the DDL trigger.</summary>
    public static async Task WriteAsTealAsync(PostgresServer server, string database, string sql)
    {
        var builder = new NpgsqlConnectionStringBuilder(server.ConnectionString(database, PostgresServer.ControlRole, server.ControlPassword)) { Options = "-c default_transaction_read_only=off", ApplicationName = "teal" };
        await using var conn = new NpgsqlConnection(builder.ConnectionString);
        await conn.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, conn);
        await cmd.ExecuteNonQueryAsync();
    }

    /// <summary>
    /// Runs a statement as a plain client (no Teal session settings, the superuser unless told
    /// otherwise, never Teal's role): the fence applies to it, at login or at the statement.
    /// </summary>
    public static async Task<PostgresException?> TryWriteAsClientAsync(PostgresServer server, string database, string sql, string? user = null, string? password = null)
    {
        await using var conn = new NpgsqlConnection(server.ConnectionString(database, user, password));
        try
        {
            await conn.OpenAsync();
            await using var cmd = new NpgsqlCommand(sql, conn);
            await cmd.ExecuteNonQueryAsync();
            return null;
        }
        catch (PostgresException ex)
        {
            return ex;
        }
    }
}

/// <summary>PostgreSQL 15 blue and 17 green with room for several deployments.</summary>
public sealed class RoomyBlueGreenFixture() : BlueGreenServers(LinkTestKit.Roomy);
