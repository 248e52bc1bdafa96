using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;

namespace Teal.Testing.Load;

/// <summary>What one pgbench run reported.</summary>
/// <param name="Processed">Transactions pgbench saw committed (acknowledged).</param>
/// <param name="Output">Everything pgbench printed, for assertion messages.</param>
public sealed record PgBenchResult(int ExitCode, long Processed, int AbortedClients, string Output);

/// <summary>Runs the real <c>pgbench</c> against a host and port (an endpoint or a server).</summary>
public static partial class PgBench
{
    public static string Binary => File.Exists("/usr/lib/postgresql/15/bin/pgbench") ? "/usr/lib/postgresql/15/bin/pgbench" : "pgbench";

    /// <summary><c>pgbench -i -s <paramref name="scale"/></c> (with primary keys, which logical replication needs).</summary>
    public static async Task InitializeAsync(string host, int port, string user, string password, string database, int scale, CancellationToken cancellationToken = default)
    {
        var result = await RunAsync(["-i", "-q", "-s", scale.ToString(CultureInfo.InvariantCulture), "--foreign-keys"], host, port, user, password, database, cancellationToken);
        if (result.ExitCode != 0)
        {
            throw new InvalidOperationException("pgbench -i failed:\n" + result.Output);
        }
    }

    /// <summary>
    /// TPC-B for <paramref name="duration"/>. With <paramref name="connectPerTransaction"/> (-C)
    /// each transaction opens its own connection, so clients survive an endpoint closing
    /// connections between transactions — as applications with a pool would.
    /// </summary>
    public static Task<PgBenchResult> TpcbAsync(string host, int port, string user, string password, string database, int clients, TimeSpan duration, bool connectPerTransaction, CancellationToken cancellationToken = default)
    {
        // With -C every client needs its own thread: pgbench connects synchronously, so a connect
        // an endpoint holds during a switchover would otherwise stall every client sharing the
        // thread mid-transaction (an application's pool connects without blocking the others).
        var threads = connectPerTransaction ? clients : Math.Min(clients, 2);
        List<string> args = ["-n", "-c", clients.ToString(CultureInfo.InvariantCulture), "-j", threads.ToString(CultureInfo.InvariantCulture), "-T", ((int)Math.Ceiling(duration.TotalSeconds)).ToString(CultureInfo.InvariantCulture)];
        if (connectPerTransaction)
        {
            args.Add("-C");
        }

        return RunAsync(args, host, port, user, password, database, cancellationToken);
    }

    private static async Task<PgBenchResult> RunAsync(IReadOnlyList<string> args, string host, int port, string user, string password, string database, CancellationToken cancellationToken)
    {
        var info = new ProcessStartInfo(Binary) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            info.ArgumentList.Add(a);
        }

        foreach (var a in new[] { "-h", host, "-p", port.ToString(CultureInfo.InvariantCulture), "-U", user, database })
        {
            info.ArgumentList.Add(a);
        }

        // The password goes through the environment, never the command line (visible in ps).
        info.Environment["PGPASSWORD"] = password;
        using var process = Process.Start(info) ?? throw new InvalidOperationException("could not start pgbench");
        var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
        var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
        await process.WaitForExitAsync(cancellationToken);
        var output = await stdout + await stderr;
        var processed = ProcessedPattern().Match(output) is { Success: true } m ? long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : 0;
        var aborted = AbortedPattern().Count(output);
        return new PgBenchResult(process.ExitCode, processed, aborted, output);
    }

    [GeneratedRegex(@"number of transactions actually processed: (\d+)")]
    private static partial Regex ProcessedPattern();

    [GeneratedRegex(@"client \d+ aborted")]
    private static partial Regex AbortedPattern();
}
