using System.Diagnostics;
using Npgsql;
using Teal.Testing;

namespace Teal.Bench.Switchover;

/// <summary>
/// What a PostgreSQL login costs on this machine, measured before the load starts: every session
/// a switchover moves logs in once on the new writer (a server process started by its postmaster,
/// one at a time), so the gaps below mean little without it. Sequential: one login at a time,
/// median of <see cref="Sequential"/>. At once: as many logins as a loop moves per cutover
/// (pgbench's 8 and the probe), started together; median of <see cref="Rounds"/> rounds' wall
/// time until the last is in.
/// </summary>
public sealed record LoginCost(string Server, double SequentialMedianMs, int AtOnce, double AtOnceMedianMs)
{
    private const int Sequential = 15;
    private const int Rounds = 5;

    /// <summary>Logins to a scratch PostgreSQL 17 server (the version every bench green runs), password authentication.</summary>
    public static async Task<LoginCost> MeasureAsync(int atOnce)
    {
        await using var server = await PostgresServer.StartAsync("17");
        var connectionString = server.ConnectionString();
        await LogInAsync(connectionString); // the server's first backend builds its caches
        var sequential = new List<double>();
        for (var i = 0; i < Sequential; i++)
        {
            sequential.Add(await LogInAsync(connectionString));
        }

        var together = new List<double>();
        for (var round = 0; round < Rounds; round++)
        {
            var started = Stopwatch.GetTimestamp();
            await Task.WhenAll(Enumerable.Range(0, atOnce).Select(_ => LogInAsync(connectionString)));
            together.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
        }

        return new LoginCost($"PostgreSQL {server.Version}", Median(sequential), atOnce, Median(together));
    }

    private static async Task<double> LogInAsync(string connectionString)
    {
        var started = Stopwatch.GetTimestamp();
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        return Stopwatch.GetElapsedTime(started).TotalMilliseconds;
    }

    private static double Median(List<double> values)
    {
        values.Sort();
        return Math.Round(values[values.Count / 2], 1);
    }
}
