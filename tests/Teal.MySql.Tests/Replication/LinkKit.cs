using MySqlConnector;
using Teal.Core.Engines;
using Teal.MySql.Replication;
using Teal.Testing;

namespace Teal.MySql.Tests.Replication;

/// <summary>Builds links over test servers and small helpers the replication tests share.</summary>
internal static class LinkKit
{
    public static MySqlReplicationLink Link(MariaDbServer blue, MariaDbServer green, string? name = null) =>
        new(
            new LinkSpec(name ?? "teal_" + Guid.NewGuid().ToString("N")[..16], blue.Connection(), green.Connection()) { GreenManaged = true },
            TestDirectories.MariaDbCatalog,
            TimeProvider.System);

    /// <summary>
    /// Runs one statement as another account, returning the server's error number, -1 when the
    /// session is gone (killed), 0 when it succeeded.
    /// </summary>
    public static async Task<int> TryAsync(MySqlConnection connection, string sql)
    {
        try
        {
            await using var command = new MySqlCommand(sql, connection);
            await command.ExecuteNonQueryAsync();
            return 0;
        }
        catch (MySqlException ex)
        {
            return ex.Number == 0 ? -1 : ex.Number;
        }
        catch (Exception ex) when (ex is InvalidOperationException or IOException)
        {
            return -1;
        }
    }

    public static async Task<int> TryOpenAsync(MariaDbServer server, string user, string password)
    {
        try
        {
            await using var connection = await server.OpenAsync(user: user, password: password);
            return 0;
        }
        catch (MySqlException ex)
        {
            return ex.Number;
        }
    }

    /// <summary>Polls until <paramref name="done"/> holds or the time is up (the machine is shared and slow at times).</summary>
    public static async Task<T> WaitForAsync<T>(Func<Task<T>> read, Func<T, bool> done, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var value = await read();
            if (done(value) || DateTime.UtcNow > deadline)
            {
                return value;
            }

            await Task.Delay(200);
        }
    }
}
