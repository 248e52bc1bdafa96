using Teal.Server.Tests.Support;

namespace Teal.Cli.Tests;

/// <summary><c>teal VERB --help</c> examples, and <c>teal webhook</c> against an in-process server.</summary>
public sealed class HelpAndWebhookCommandTests : IAsyncLifetime
{
    private TealHost _teal = null!; // Set in InitializeAsync.

    public async Task InitializeAsync() => _teal = await TealHost.StartAsync();

    public async Task DisposeAsync() => await _teal.DisposeAsync();

    [Theory]
    [InlineData("create", "teal create upgrade --source app --target-engine-version 17 --wait")]
    [InlineData("switchover", "teal switchover upgrade --switchover-timeout 60 --wait")]
    [InlineData("events", "teal events upgrade --follow")]
    [InlineData("webhook add", "teal webhook add https://hooks.example.com/teal --secret")]
    public async Task Help_OfAVerb_ShowsExamples(string verb, string example)
    {
        var run = await CliRun.RunAsync([.. verb.Split(' '), "--help"]);

        run.ExitCode.ShouldBe(0, run.ToString());
        run.Stdout.ShouldContain("Examples:");
        run.Stdout.ShouldContain(example);
    }

    [Fact]
    public async Task Webhook_AddListRemove_NeverPrintsTheSecret()
    {
        const string secret = "cli-webhook-secret-91b";
        var environment = new Dictionary<string, string> { ["TEAL_SERVER"] = _teal.Url.ToString(), ["TEAL_TOKEN"] = _teal.Token };

        var added = await CliRun.RunAsync(environment, "webhook", "add", "http://127.0.0.1:1/hook", "--secret", secret);
        added.ExitCode.ShouldBe(0, added.ToString());
        added.Stdout.ShouldContain("(signed)");
        var id = added.Stdout.Split(' ')[1];
        var listed = await CliRun.RunAsync(environment, "webhook", "list");
        var json = await CliRun.RunAsync(environment, "webhook", "list", "--output", "json");
        var removed = await CliRun.RunAsync(environment, "webhook", "remove", id);

        listed.Stdout.ShouldContain(id);
        listed.Stdout.ShouldContain("yes");
        (added.Stdout + listed.Stdout + json.Stdout).ShouldNotContain(secret);
        json.Stdout.ShouldContain("\"hasSecret\"");
        removed.ExitCode.ShouldBe(0, removed.ToString());
        (await CliRun.RunAsync(environment, "webhook", "list")).Stdout.ShouldNotContain(id);
    }
}
