using Teal.Server;
using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Cli.Tests;

/// <summary>Version, help, exit codes and how the CLI finds its server and token.</summary>
public sealed class CliBasicsTests : IAsyncLifetime
{
    private TealHost _teal = null!; // Set in InitializeAsync, before any test runs.

    public async Task InitializeAsync() => _teal = await TealHost.StartAsync();

    public async Task DisposeAsync() => await _teal.DisposeAsync();

    [Fact]
    public async Task Version_PrintsTealVersion_Exit0()
    {
        var run = await CliRun.RunAsync("--version");

        run.ExitCode.ShouldBe(0);
        run.Stdout.Trim().ShouldBe($"teal {TealServer.Version}");
    }

    [Fact]
    public async Task Help_ListsEveryVerb_Exit0()
    {
        var run = await CliRun.RunAsync("--help");

        run.ExitCode.ShouldBe(0);
        foreach (var verb in new[] { "serve", "proxy", "engine", "instance", "create", "list", "show", "verify", "ack-ddl", "apply-ddl", "add-tables", "delete", "events", "endpoint", "check", "switchover", "switchback", "finish" })
        {
            run.Stdout.ShouldContain($"  {verb}");
        }
    }

    [Fact]
    public async Task InstanceHelp_ListsItsVerbs()
    {
        var run = await CliRun.RunAsync("instance", "--help");

        run.ExitCode.ShouldBe(0);
        foreach (var verb in new[] { "add", "create", "list", "url", "remove" })
        {
            run.Stdout.ShouldContain($"  {verb}");
        }
    }

    [Fact]
    public async Task UnreachableServer_Exit1WithOneErrorLineAndHint()
    {
        var run = await CliRun.RunAsync("list", "--server", "http://127.0.0.1:1");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines.ShouldBe(["error: cannot reach Teal at http://127.0.0.1:1/", "hint: start it with teal serve (or point --server / TEAL_SERVER at it)"]);
    }

    [Fact]
    public async Task MissingRequiredOption_IsUsageError_Exit2()
    {
        var run = await CliRun.RunAsync("create", "orders");

        run.ExitCode.ShouldBe(2, run.ToString());
        run.Stderr.ShouldContain("--source");
        run.ErrorLines[^1].ShouldBe("hint: see `teal create --help`");
    }

    [Fact]
    public async Task UnknownVerb_IsUsageError_Exit2()
    {
        (await CliRun.RunAsync("frobnicate")).ExitCode.ShouldBe(2);
    }

    [Fact]
    public async Task ParameterWithoutEquals_IsUsageError_Exit2()
    {
        var run = await CliRun.RunAsync("instance", "create", "blue", "--version", "15", "--parameter", "fsync");

        run.ExitCode.ShouldBe(2, run.ToString());
        run.Stderr.ShouldContain("--parameter expects KEY=VALUE, not 'fsync'");
    }

    [Fact]
    public async Task List_Empty_PrintsHeaderOrEmptyJson()
    {
        var table = await Run("list");
        var json = await Run("list", "--output", "json");

        table.ExitCode.ShouldBe(0, table.ToString());
        table.Stdout.ShouldStartWith("ID  NAME  STATUS");
        json.ExitCode.ShouldBe(0, json.ToString());
        json.Stdout.Trim().ShouldBe("[]");
    }

    [Fact]
    public async Task ServerFromEnvironment_TokenFromDataDirectory()
    {
        var env = new Dictionary<string, string> { ["TEAL_SERVER"] = _teal.Url.ToString(), ["TEAL_DATA_DIR"] = _teal.DataDirectory };

        var run = await CliRun.RunAsync(env, "instance", "remove", "ghost");

        // Past the token check: the server itself answers that there is no such instance.
        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines.ShouldBe(["error: no instance named 'ghost'", "hint: see `teal instance list`"]);
    }

    [Fact]
    public async Task MutatingVerb_WithoutToken_Exit1NamingTheToken()
    {
        var elsewhere = TestDirectories.NewDirectory("no-token");

        var run = await CliRun.RunAsync("endpoint", "remove", "app", "--server", _teal.Url.ToString(), "--data-dir", elsewhere);

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldBe("error: this call needs Teal's token");
        run.ErrorLines[1].ShouldContain("TEAL_TOKEN");
    }

    [Fact]
    public async Task WrongToken_Exit1()
    {
        var run = await Run("endpoint", "remove", "app", "--token", "nope");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldBe("error: the token is not Teal's token");
    }

    [Fact]
    public async Task EngineList_ShowsPostgres15()
    {
        var run = await Run("engine", "list");

        run.ExitCode.ShouldBe(0, run.ToString());
        run.Stdout.ShouldContain("postgres  15.");
    }

    [Fact]
    public async Task Events_Empty_Exit0()
    {
        var run = await Run("events", "--output", "json");

        run.ExitCode.ShouldBe(0, run.ToString());
        run.Stdout.Trim().ShouldBe("[]");
    }

    [Fact]
    public async Task Switchover_UnknownDeployment_Exit1()
    {
        var run = await Run("switchover", "nope", "--wait");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldBe("error: no deployment 'nope'");
    }

    [Fact]
    public async Task Switchover_TimeoutOutOfRange_Exit1NamingTheRange()
    {
        var run = await Run("switchover", "nope", "--switchover-timeout", "5");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldBe("error: --switchover-timeout 5 is out of range");
        run.ErrorLines[1].ShouldContain("30–3600");
    }

    [Theory]
    [InlineData("abc")]
    [InlineData("30s")]
    [InlineData("-5")]
    public async Task Switchover_TimeoutNotWholeSeconds_UsageErrorNamingTheUnitAndRange(string value)
    {
        var run = await Run("switchover", "orders", "--switchover-timeout", value);

        run.ExitCode.ShouldBe(2, run.ToString());
        run.ErrorLines[0].ShouldBe($"error: --switchover-timeout expects whole seconds, 30–3600, not '{value}'");
        run.Stderr.ShouldNotContain("System.");
    }

    [Theory]
    [InlineData("--parameter", "work mem=4MB")]
    [InlineData("--parameter", "shared_buffers'=1")]
    public async Task InstanceCreate_BadSettingName_UsageError_Exit2(string option, string pair)
    {
        var run = await CliRun.RunAsync("instance", "create", "blue", "--version", "15", option, pair);

        run.ExitCode.ShouldBe(2, run.ToString());
        run.Stderr.ShouldContain("is not a server setting name");
    }

    [Fact]
    public async Task Create_SettingValueWithLineBreak_UsageError_Exit2()
    {
        var run = await CliRun.RunAsync("create", "orders", "--source", "blue", "--target-parameter", "work_mem=4MB\nlisten_addresses='*'");

        run.ExitCode.ShouldBe(2, run.ToString());
        run.Stderr.ShouldContain("the value of work_mem holds a line break");
    }

    private Task<CliRun> Run(params string[] args) =>
        CliRun.RunAsync([.. args, "--server", _teal.Url.ToString(), "--data-dir", _teal.DataDirectory]);
}
