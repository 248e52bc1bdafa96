using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Teal.Postgres.Instances;
using Teal.Testing;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests;

/// <summary><c>teal demo</c> as a newcomer runs it: it ends with a clean summary, and <c>--stop</c> leaves nothing running.</summary>
public sealed partial class DemoTests
{
    [Fact]
    public async Task Demo_SwitchesOverUnderLoad_SummarizesWithoutAlarmingOutput_AndStopCleansUp()
    {
        var directory = Path.Combine(TestDirectories.NewDirectory("demo"), "teal-demo");
        string[] where = ["--data-dir", directory, "--port", ManagedPostgres.FreePort().ToString(CultureInfo.InvariantCulture), "--endpoint-port", ManagedPostgres.FreePort().ToString(CultureInfo.InvariantCulture)];
        try
        {
            var demo = await RunAsync(["demo", .. where], TimeSpan.FromMinutes(8));

            demo.ExitCode.ShouldBe(0, demo.ToString());
            demo.Stdout.ShouldContain("switchover     COMPLETED");
            demo.Stdout.ShouldMatch(@"write pause\s+\d+ ms");
            demo.Stdout.ShouldMatch(@"rows verified\s+[\d,]+ per side in \d+ tables, all equal");
            demo.Stdout.ShouldMatch(@"writes\s+[\d,]+ acknowledged through the endpoint, 0 lost");
            demo.Stdout.ShouldContain("dashboard");
            // Nothing a newcomer would read as a failure (pgbench's "Run was aborted" was one).
            foreach (var line in demo.Stdout.Split('\n').Where(l => !l.TrimStart().StartsWith("client errors", StringComparison.Ordinal)))
            {
                Alarming().IsMatch(line).ShouldBeFalse($"alarming line: {line}\n{demo}");
            }
        }
        finally
        {
            var stop = await RunAsync(["demo", "--stop", .. where], TimeSpan.FromMinutes(2));
            stop.ExitCode.ShouldBe(0, stop.ToString());
        }

        var pid = int.Parse(await File.ReadAllTextAsync(Path.Combine(directory, "serve.pid")), CultureInfo.InvariantCulture);
        Directory.Exists($"/proc/{pid}").ShouldBeFalse("teal serve still runs after teal demo --stop");
        foreach (var pidFile in Directory.GetFiles(Path.Combine(directory, "instances"), "postmaster.pid", SearchOption.AllDirectories))
        {
            Assert.Fail($"a demo PostgreSQL server still runs: {pidFile}");
        }
    }

    private static async Task<CliResult> RunAsync(string[] args, TimeSpan timeout)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(RepoPaths.TealDll);
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        info.Environment["NO_COLOR"] = "1";
        using var process = Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        await process.WaitForExitAsync(cts.Token);
        return new CliResult(process.ExitCode, await stdout, await stderr);
    }

    [GeneratedRegex(@"\b(error|errors|fail|failed|abort|aborted|FATAL)\b", RegexOptions.IgnoreCase)]
    private static partial Regex Alarming();
}
