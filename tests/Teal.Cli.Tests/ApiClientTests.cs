using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Teal.Server;

namespace Teal.Cli.Tests;

/// <summary>How the CLI reads answers that are not Teal's refusals: a 500 is a bug (exit 70).</summary>
public sealed class ApiClientTests : IAsyncLifetime
{
    private WebApplication _fake = null!; // Set in InitializeAsync, before any test runs.

    public async Task InitializeAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        _fake = builder.Build();
        _fake.MapGet("/api/deployments", () => Results.Problem("Teal hit an internal error; its log has the details", statusCode: 500, extensions: new Dictionary<string, object?> { ["code"] = "internal" }));
        _fake.MapGet("/api/instances", () => Results.Text("<html>bad gateway</html>", "text/html", statusCode: 502));
        _fake.MapGet("/api/endpoints", () => Results.Problem("the server has no free connection slots", statusCode: 503, extensions: new Dictionary<string, object?> { ["code"] = "connection.too-many-connections", ["hint"] = "raise max_connections" }));
        await _fake.StartAsync();
    }

    public async Task DisposeAsync() => await _fake.DisposeAsync();

    [Fact]
    public async Task ServerError500_IsABug_Exit70()
    {
        var run = await CliRun.RunAsync("list", "--server", Url());

        run.ExitCode.ShouldBe(70, run.ToString());
        run.ErrorLines[0].ShouldBe("error: Teal hit an internal error; its log has the details");
    }

    [Fact]
    public async Task NonProblemAnswer_ReportsTheStatus()
    {
        var run = await CliRun.RunAsync("instance", "list", "--server", Url());

        run.ExitCode.ShouldBe(70, run.ToString());
        run.ErrorLines[0].ShouldBe("error: Teal answered 502 BadGateway");
    }

    [Fact]
    public async Task Unavailable503_IsARefusal_Exit1WithHint()
    {
        var run = await CliRun.RunAsync("endpoint", "list", "--server", Url());

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines.ShouldBe(["error: the server has no free connection slots", "hint: raise max_connections"]);
    }

    private string Url() => TealServer.BoundAddress(_fake).ToString();
}
