using System.Diagnostics;
using System.Globalization;
using System.Text;
using Teal.Testing.Load;

namespace Teal.Bench.Switchover;

/// <summary>What a pgbench load reported up to when it was stopped.</summary>
public sealed record PgbenchOutcome(int AbortedClients, IReadOnlyList<string> ErrorLines);

/// <summary>
/// pgbench TPC-B through an endpoint for as long as the bench needs it. A fixed <c>-T</c> would
/// have to guess how long the switchover takes; instead pgbench runs with a long <c>-T</c> and is
/// stopped once the load window is over. What counts (aborted clients, error lines) pgbench writes
/// to stderr as it happens, so nothing is lost by stopping it.
/// </summary>
internal sealed class PgbenchLoad : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();

    private PgbenchLoad(Process process)
    {
        _process = process;
        _process.OutputDataReceived += (_, e) => Append(e.Data);
        _process.ErrorDataReceived += (_, e) => Append(e.Data);
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public static PgbenchLoad Start(string host, int port, string user, string password, string database, int clients, bool connectPerTransaction, string queryMode = "simple")
    {
        var info = new ProcessStartInfo(PgBench.Binary) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        // -j = clients: one pgbench thread per client. With -C a thread opens each connection
        // synchronously, so with fewer threads a connection held by a paused endpoint would also
        // stall the thread's other clients in the middle of their transactions, and the drain
        // would wait its whole budget for transactions no application would leave hanging.
        var count = clients.ToString(CultureInfo.InvariantCulture);
        List<string> args = ["-n", "-c", count, "-j", count, "-T", "600", "-h", host, "-p", port.ToString(CultureInfo.InvariantCulture), "-U", user];
        if (connectPerTransaction)
        {
            args.Add("-C");
        }

        // -M prepared: named prepared statements on each connection, which a moved session must keep.
        args.AddRange(["-M", queryMode]);

        args.Add(database);
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        // The password goes through the environment, never the command line (visible in ps).
        info.Environment["PGPASSWORD"] = password;
        return new PgbenchLoad(Process.Start(info) ?? throw new InvalidOperationException("could not start pgbench"));
    }

    /// <summary>Stops pgbench (SIGINT, then SIGKILL if it lingers) and returns what it reported.</summary>
    public async Task<PgbenchOutcome> StopAsync()
    {
        if (!_process.HasExited)
        {
            using (var interrupt = Process.Start("kill", ["-INT", _process.Id.ToString(CultureInfo.InvariantCulture)]))
            {
                await interrupt.WaitForExitAsync();
            }

            using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            try
            {
                await _process.WaitForExitAsync(grace.Token);
            }
            catch (OperationCanceledException)
            {
                _process.Kill();
                await _process.WaitForExitAsync();
            }
        }

        // Let the asynchronous readers deliver the last lines.
        _process.WaitForExit();
        string[] lines;
        lock (_output)
        {
            lines = _output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        }

        var errors = lines.Where(l => l.Contains("error", StringComparison.OrdinalIgnoreCase)).ToList();
        var aborted = lines.Count(l => l.Contains("aborted", StringComparison.Ordinal) && l.Contains("client", StringComparison.Ordinal));
        return new PgbenchOutcome(aborted, errors);
    }

    public void Dispose()
    {
        if (!_process.HasExited)
        {
            _process.Kill();
        }

        _process.Dispose();
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.Append(line).Append('\n');
        }
    }
}
