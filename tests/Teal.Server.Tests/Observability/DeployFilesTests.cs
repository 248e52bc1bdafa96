using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using Teal.Server.Tests.Support;
using Teal.Testing.Processes;

namespace Teal.Server.Tests.Observability;

/// <summary>
/// The alert rules and the Grafana dashboard under deploy/: valid for their tools, and about
/// metrics Teal really exposes (a renamed metric would silently empty a panel or an alert).
/// </summary>
public sealed partial class DeployFilesTests : IAsyncLifetime
{
    private static readonly string Rules = Path.Combine(RepoPaths.Root, "deploy", "prometheus", "teal-rules.yml");
    private static readonly string RuleTests = Path.Combine(RepoPaths.Root, "deploy", "prometheus", "teal-rules.test.yml");
    private static readonly string Dashboard = Path.Combine(RepoPaths.Root, "deploy", "grafana", "teal.json");

    private TealHost _teal = null!; // Set in InitializeAsync.

    public async Task InitializeAsync() => _teal = await TealHost.StartAsync();

    public async Task DisposeAsync() => await _teal.DisposeAsync();

    [Fact]
    public async Task AlertRules_PassPromtoolCheck()
    {
        var (code, output) = await PromtoolAsync("check", "rules", Rules);

        code.ShouldBe(0, output);
        output.ShouldContain("SUCCESS");
    }

    [Fact]
    public async Task AlertRules_FireOnTheirSeries_InPromtoolUnitTests()
    {
        var (code, output) = await PromtoolAsync("test", "rules", RuleTests);

        code.ShouldBe(0, output);
    }

    [Fact]
    public async Task AlertRules_UseOnlyExposedMetrics()
    {
        var exposed = await ExposedMetricFamiliesAsync();

        foreach (var name in MetricNames(await File.ReadAllTextAsync(Rules)))
        {
            exposed.ShouldContain(name, $"teal-rules.yml uses {name}, which /metrics does not declare");
        }
    }

    [Fact]
    public async Task GrafanaDashboard_IsJsonWhosePanelsQueryExposedMetrics()
    {
        using var dashboard = JsonDocument.Parse(await File.ReadAllTextAsync(Dashboard));
        var exposed = await ExposedMetricFamiliesAsync();
        var panels = dashboard.RootElement.GetProperty("panels").EnumerateArray().ToList();

        dashboard.RootElement.GetProperty("uid").GetString().ShouldBe("teal");
        panels.Count.ShouldBeGreaterThan(5);
        panels.Select(p => p.GetProperty("id").GetInt32()).ShouldBeUnique();
        foreach (var panel in panels)
        {
            var targets = panel.GetProperty("targets").EnumerateArray().ToList();
            targets.ShouldNotBeEmpty(panel.GetProperty("title").GetString());
            foreach (var name in targets.SelectMany(t => MetricNames(t.GetProperty("expr").GetString()!)))
            {
                exposed.ShouldContain(name, $"panel '{panel.GetProperty("title").GetString()}' queries {name}, which /metrics does not declare");
            }
        }
    }

    /// <summary>The metric families /metrics declares (# TYPE lines), counters with their _total.</summary>
    private async Task<HashSet<string>> ExposedMetricFamiliesAsync()
    {
        using var client = _teal.Client(withToken: false);
        var text = await client.GetStringAsync("/metrics");
        return [.. text.Split('\n').Where(l => l.StartsWith("# TYPE ", StringComparison.Ordinal)).Select(l => l.Split(' ')[2])];
    }

    private static IEnumerable<string> MetricNames(string text) =>
        MetricName().Matches(text).Select(m => m.Value).Distinct();

    private static async Task<(int Code, string Output)> PromtoolAsync(params string[] args)
    {
        // scripts/setup.sh installs Debian's prometheus package, which brings promtool.
        File.Exists("/usr/bin/promtool").ShouldBeTrue("promtool is missing: run scripts/setup.sh");
        var start = new ProcessStartInfo("/usr/bin/promtool", args) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Path.GetDirectoryName(Rules)! };
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, await stdout + await stderr);
    }

    [GeneratedRegex(@"\b(teal|process)_[a-z_]+\b")]
    private static partial Regex MetricName();
}
