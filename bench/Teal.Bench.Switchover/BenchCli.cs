using System.Diagnostics;
using System.Text.Json;
using Npgsql;
using Teal.Testing.Processes;

namespace Teal.Bench.Switchover;

/// <summary>
/// Runs the real <c>teal</c> CLI against one <c>teal serve</c>, as an operator would. Unlike the
/// tests' <see cref="TealCli"/> it passes extra environment (the PgBouncer admin password goes
/// through <c>TEAL_PGBOUNCER_PASSWORD</c>, never the command line).
/// </summary>
internal sealed class BenchCli(TealProcess server)
{
    public async Task<CliResult> RunAsync(IReadOnlyList<string> args, TimeSpan timeout, IReadOnlyDictionary<string, string>? environment = null)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
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

    public Task<CliResult> RunAsync(params string[] args) => RunAsync(args, TimeSpan.FromMinutes(5));

    /// <summary>Runs a command that must succeed (setup and cleanup): a failure stops the bench with the CLI's own words.</summary>
    public async Task<CliResult> MustAsync(IReadOnlyList<string> args, TimeSpan timeout, IReadOnlyDictionary<string, string>? environment = null)
    {
        var result = await RunAsync(args, timeout, environment);
        return result.ExitCode == 0 ? result : throw new InvalidOperationException($"teal {string.Join(' ', args)} failed: {result}");
    }

    public async Task<JsonElement> ShowAsync(string deployment)
    {
        var shown = await MustAsync(["show", deployment, "--output", "json"], TimeSpan.FromMinutes(1));
        return JsonDocument.Parse(shown.Stdout).RootElement.Clone();
    }

    /// <summary>Teal's superuser connection to an instance (libpq URI from <c>teal instance url</c>), to <paramref name="database"/>.</summary>
    public async Task<string> InstanceConnectionAsync(string instance, string database)
    {
        var url = await MustAsync(["instance", "url", instance], TimeSpan.FromMinutes(1));
        var info = Teal.Postgres.Connections.ConnectionStrings.Parse(url.Stdout.Trim());
        return new NpgsqlConnectionStringBuilder { Host = info.Host, Port = info.Port, Username = info.User, Password = info.Password, Database = database, Pooling = false }.ConnectionString;
    }
}
