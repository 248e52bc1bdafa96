using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Cli.Tests;

/// <summary>
/// Passwords kept out of argv: <c>--password-file</c>, <c>--password-env</c> and
/// <c>--password-stdin</c> on <c>teal instance add</c>, against a real PostgreSQL 15 whose
/// connection string carries no password.
/// </summary>
public sealed class PasswordOptionTests(Postgres15Fixture postgres) : IClassFixture<Postgres15Fixture>, IAsyncLifetime
{
    private TealHost _teal = null!; // Set in InitializeAsync, before any test runs.

    public async Task InitializeAsync() => _teal = await TealHost.StartAsync();

    public async Task DisposeAsync() => await _teal.DisposeAsync();

    private string WithoutPassword => $"postgresql://{postgres.Server.User}@{postgres.Server.Host}:{postgres.Server.Port}/postgres";

    [Fact]
    public async Task PasswordFile_FirstLineIsThePassword_AndTheUrlHasIt()
    {
        var file = Path.Combine(TestDirectories.NewDirectory("pw"), "blue.pw");
        await File.WriteAllTextAsync(file, postgres.Server.Password + "\n");

        var added = await Run("instance", "add", "blue", "--connection", WithoutPassword, "--password-file", file);

        added.ExitCode.ShouldBe(0, added.ToString());
        (await Run("instance", "url", "blue")).Stdout.Trim().ShouldBe(postgres.Server.Uri());
    }

    [Fact]
    public async Task PasswordEnv_ReadsTheNamedVariable()
    {
        var env = new Dictionary<string, string> { ["BLUE_PW"] = postgres.Server.Password };

        var added = await CliRun.RunAsync(env, [.. Args("instance", "add", "blue", "--connection", WithoutPassword, "--password-env", "BLUE_PW")]);

        added.ExitCode.ShouldBe(0, added.ToString());
        added.Stdout.ShouldNotContain(postgres.Server.Password);
    }

    [Fact]
    public async Task PasswordStdin_ReadsTheFirstLine()
    {
        using var input = new StringReader(postgres.Server.Password + "\nnot this\n");
        using var output = new StringWriter();
        using var error = new StringWriter();

        var exit = await TealCli.RunAsync(Args("instance", "add", "blue", "--connection", WithoutPassword, "--password-stdin"), input, output, error, _ => null, CancellationToken.None);

        exit.ShouldBe(0, error.ToString());
        (await Run("instance", "url", "blue")).Stdout.Trim().ShouldBe(postgres.Server.Uri());
    }

    [Fact]
    public async Task WrongPasswordFromFile_RefusedWithoutEchoingIt()
    {
        var file = Path.Combine(TestDirectories.NewDirectory("pw"), "blue.pw");
        await File.WriteAllTextAsync(file, "Not-The-Password-9\n");

        var run = await Run("instance", "add", "blue", "--connection", WithoutPassword, "--password-file", file);

        run.ExitCode.ShouldBe(1, run.ToString());
        run.Stderr.ShouldNotContain("Not-The-Password-9");
        (await _teal.State.ListInstancesAsync(default)).ShouldBeEmpty();
    }

    [Fact]
    public async Task PasswordInConnectionAndAnotherApart_Refused()
    {
        var run = await CliRun.RunAsync(new Dictionary<string, string> { ["OTHER_PW"] = "Other-Pw-1" }, [.. Args("instance", "add", "blue", "--connection", postgres.Server.Uri(), "--password-env", "OTHER_PW")]);

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldBe("error: the connection string holds a password and another one was given apart from it");
        run.ErrorLines[1].ShouldContain("ps");
        run.Stderr.ShouldNotContain("Other-Pw-1");
    }

    [Fact]
    public async Task TwoPasswordSources_IsUsageError_Exit2()
    {
        var run = await Run("instance", "add", "blue", "--connection", WithoutPassword, "--password-env", "X", "--password-stdin");

        run.ExitCode.ShouldBe(2, run.ToString());
        run.Stderr.ShouldContain("give the password one way");
    }

    [Fact]
    public async Task UnsetVariableAndMissingFile_Exit1NamingThem()
    {
        var unset = await Run("instance", "add", "blue", "--connection", WithoutPassword, "--password-env", "TEAL_TEST_UNSET_PW");
        var missing = await Run("instance", "add", "blue", "--connection", WithoutPassword, "--password-file", "/nonexistent/teal.pw");

        unset.ExitCode.ShouldBe(1, unset.ToString());
        unset.ErrorLines[0].ShouldBe("error: the environment variable TEAL_TEST_UNSET_PW is not set");
        missing.ExitCode.ShouldBe(1, missing.ToString());
        missing.ErrorLines[0].ShouldStartWith("error: cannot read the password file /nonexistent/teal.pw");
    }

    [Theory]
    [InlineData("instance", "add")]
    [InlineData("create")]
    public async Task Help_SaysAPasswordInTheConnectionIsVisibleInPs(params string[] verb)
    {
        var run = await CliRun.RunAsync([.. verb, "--help"]);

        run.ExitCode.ShouldBe(0);
        var text = string.Join(' ', run.Stdout.Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries));
        text.ShouldContain("visible to every local user in ps");
        text.ShouldContain("password-file");
        text.ShouldContain("password-stdin");
        text.ShouldContain("password-env");
    }

    private string[] Args(params string[] args) => [.. args, "--server", _teal.Url.ToString(), "--data-dir", _teal.DataDirectory];

    private Task<CliRun> Run(params string[] args) => CliRun.RunAsync(Args(args));
}
