using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Cli.Tests;

/// <summary>
/// A blue deployed once can be deployed again: after a delete, and after a switchover and
/// `teal finish` (then production, the first deployment's green, is the next one's blue).
/// </summary>
public sealed class RedeployTests : IAsyncLifetime
{
    private TealHost _teal = null!; // Set in InitializeAsync, before any test runs.
    private PostgresServer _blue = null!; // Set in InitializeAsync.

    public async Task InitializeAsync()
    {
        _blue = await PostgresServer.StartAsync("15");
        _teal = await TealHost.StartAsync();
        await _blue.ExecuteAsync("CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 200) g");
        (await Run("instance", "add", "app", "--connection", _blue.Uri())).ExitCode.ShouldBe(0);
    }

    public async Task DisposeAsync()
    {
        await _teal.DisposeAsync();
        await _blue.DisposeAsync();
    }

    [Fact]
    public async Task CreateAgain_AfterDelete_CopiesTheSchemaAndReplicates()
    {
        (await Run("create", "first", "--source", "app", "--wait")).ExitCode.ShouldBe(0);
        (await Run("delete", "first", "--delete-target")).ExitCode.ShouldBe(0);

        var again = await Run("create", "second", "--source", "app", "--wait");

        again.ExitCode.ShouldBe(0, again.ToString());
        var verified = await Run("verify", "second");
        verified.ExitCode.ShouldBe(0, verified.ToString());
        (await Run("delete", "second", "--delete-target")).ExitCode.ShouldBe(0);
    }

    [Fact]
    public async Task CreateAgain_AfterSwitchoverAndFinish_FromTheNewProduction()
    {
        (await Run("create", "first", "--source", "app", "--wait")).ExitCode.ShouldBe(0);
        var switched = await Run("switchover", "first", "--wait");
        switched.ExitCode.ShouldBe(0, switched.ToString());
        var finished = await Run("finish", "first");
        finished.ExitCode.ShouldBe(0, finished.ToString());

        // "app" is now the first deployment's green.
        var again = await Run("create", "second", "--source", "app", "--wait");

        again.ExitCode.ShouldBe(0, again.ToString());
        var verified = await Run("verify", "second");
        verified.ExitCode.ShouldBe(0, verified.ToString());
        var switchedAgain = await Run("switchover", "second", "--wait");
        switchedAgain.ExitCode.ShouldBe(0, switchedAgain.ToString());
    }

    [Fact]
    public async Task CreateAgain_AfterSwitchoverWithoutReverseReplication_AndFinish()
    {
        (await Run("create", "first", "--source", "app", "--no-reverse-replication", "--wait")).ExitCode.ShouldBe(0);
        var switched = await Run("switchover", "first", "--wait");
        switched.ExitCode.ShouldBe(0, switched.ToString());
        var finished = await Run("finish", "first");
        finished.ExitCode.ShouldBe(0, finished.ToString());

        var again = await Run("create", "second", "--source", "app", "--wait");

        again.ExitCode.ShouldBe(0, again.ToString());
    }

    private Task<CliRun> Run(params string[] args) =>
        CliRun.RunAsync([.. args, "--server", _teal.Url.ToString(), "--data-dir", _teal.DataDirectory]);
}
