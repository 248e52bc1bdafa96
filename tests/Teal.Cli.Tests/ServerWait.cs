using Npgsql;

namespace Teal.Cli.Tests;

/// <summary>Polling for a condition on real servers, for the CLI tests that wait on replication.</summary>
internal static class ServerWait
{
    /// <summary>
    /// Polls <paramref name="condition"/> every 500 ms for up to a minute. A connection refused
    /// meanwhile counts as "not yet": a reader starting up, or one that has not replayed the
    /// unfence, refuses logins for a moment.
    /// </summary>
    public static async Task UntilAsync(Func<Task<bool>> condition, string what)
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
            catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException)
            {
                // Not yet.
            }

            await Task.Delay(500);
        }

        throw new TimeoutException($"timed out waiting until {what}");
    }
}
