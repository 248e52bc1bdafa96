using System.Diagnostics;

namespace Teal.Testing.Processes;

/// <summary>What one <c>teal</c> command printed and returned.</summary>
public sealed record CliResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\nstdout:\n{Stdout}\nstderr:\n{Stderr}";
}

/// <summary>Runs the real <c>teal</c> executable as an operator would, against one server.</summary>
public sealed class TealCli(TealProcess server)
{
    public async Task<CliResult> RunAsync(params string[] args) => await RunAsync(args, TimeSpan.FromMinutes(5));

    /// <param name="environment">Extra variables for this command only (e.g. <c>TEAL_PGBOUNCER_PASSWORD</c>).</param>
    public async Task<CliResult> RunAsync(IReadOnlyList<string> args, TimeSpan timeout, IReadOnlyDictionary<string, string>? environment = null)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(RepoPaths.TealDll);
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        info.Environment["TEAL_SERVER"] = server.Url;
        info.Environment["TEAL_TOKEN"] = server.Token;
        info.Environment["NO_COLOR"] = "1";
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            info.Environment[key] = value;
        }

        using var process = Process.Start(info) ?? throw new InvalidOperationException("could not start teal");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"teal {string.Join(' ', args)} did not finish within {timeout}");
        }

        return new CliResult(process.ExitCode, await stdout, await stderr);
    }
}
