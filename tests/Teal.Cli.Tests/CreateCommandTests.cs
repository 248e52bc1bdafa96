using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Cli.Tests;

/// <summary>
/// <c>teal create</c> refusals, each checked for its message, exit code 1, and that nothing was
/// created: no deployment listed, no instance added, no managed green directory left.
/// </summary>
public sealed class CreateCommandTests(Postgres15Fixture blue) : IClassFixture<Postgres15Fixture>, IAsyncLifetime
{
    private TealHost _teal = null!; // Set in InitializeAsync, before any test runs.

    public async Task InitializeAsync()
    {
        _teal = await TealHost.StartAsync();
        (await Run("instance", "add", "blue", "--connection", blue.Server.Uri())).ExitCode.ShouldBe(0);
    }

    public async Task DisposeAsync() => await _teal.DisposeAsync();

    [Fact]
    public async Task UnknownSource_Exit1AndNothingCreated()
    {
        var run = await Run("create", "orders", "--source", "nope");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldBe("error: no instance named 'nope'");
        run.ErrorLines[1].ShouldStartWith("hint: register it with `teal instance add");
        await ShouldHaveCreatedNothingAsync();
    }

    [Fact]
    public async Task UnknownTargetEngineVersion_Exit1AndNothingCreated()
    {
        var run = await Run("create", "orders", "--source", "blue", "--target-engine-version", "99");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldStartWith("error: cannot create deployment 'orders': no PostgreSQL 99 binaries on this machine");
        run.ErrorLines[1].ShouldStartWith("hint: ");
        await ShouldHaveCreatedNothingAsync();
    }

    [Fact]
    public async Task WrongPasswordOnTargetConnection_Exit1WithoutThePassword()
    {
        const string password = "Not-The-Pa55word-plugh";
        await using var green = await PostgresServer.StartAsync("15");

        var run = await Run("create", "orders", "--source", "blue", "--target-connection", green.Uri().Replace(green.Password, password, StringComparison.Ordinal));

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldContain("authentication failed");
        run.Stdout.ShouldNotContain(password);
        run.Stderr.ShouldNotContain(password);
        await ShouldHaveCreatedNothingAsync();
    }

    [Fact]
    public async Task BlueWithoutLogicalWal_RefusedNamingWalLevel()
    {
        await using var replicaBlue = await PostgresServer.StartAsync("15", new Dictionary<string, string> { ["wal_level"] = "replica" });
        (await Run("instance", "add", "plain", "--connection", replicaBlue.Uri())).ExitCode.ShouldBe(0);

        var run = await Run("create", "orders", "--source", "plain");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines.Length.ShouldBe(2, run.ToString());
        run.ErrorLines[0].ShouldStartWith("error: cannot create deployment 'orders'");
        run.ErrorLines[0].ShouldContain("wal_level");
        run.ErrorLines[1].ShouldContain("wal_level");
        (await _teal.State.ListDeploymentsAsync(default)).ShouldBeEmpty();
        (await _teal.State.ListInstancesAsync(default)).Select(i => i.Name).ShouldBe(["blue", "plain"], ignoreOrder: true);
        Directory.EnumerateFileSystemEntries(Path.Combine(_teal.DataDirectory, "instances")).ShouldBeEmpty();
        (await Run("instance", "remove", "plain")).ExitCode.ShouldBe(0);
    }

    [Fact]
    public async Task DuplicateName_Exit1AndTheFirstDeploymentIsUntouched()
    {
        await blue.Server.ExecuteAsync("CREATE DATABASE dup");
        await blue.Server.ExecuteAsync("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)", "dup");
        (await Run("instance", "add", "dup", "--connection", blue.Server.Uri("dup"))).ExitCode.ShouldBe(0);
        var first = await Run("create", "orders", "--source", "dup", "--wait");
        first.ExitCode.ShouldBe(0, first.ToString());
        first.Stdout.ShouldContain("is AVAILABLE");
        var before = (await _teal.State.ListDeploymentsAsync(default)).ShouldHaveSingleItem();
        var instancesBefore = (await _teal.State.ListInstancesAsync(default)).Count;

        var run = await Run("create", "orders", "--source", "blue");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldBe("error: a deployment named 'orders' already exists");
        var after = (await _teal.State.ListDeploymentsAsync(default)).ShouldHaveSingleItem();
        after.Id.ShouldBe(before.Id);
        (await _teal.State.ListInstancesAsync(default)).Count.ShouldBe(instancesBefore);
        Directory.EnumerateDirectories(Path.Combine(_teal.DataDirectory, "instances")).ShouldHaveSingleItem().ShouldEndWith(before.Green);

        var shown = await Run("show", "orders");
        shown.ExitCode.ShouldBe(0, shown.ToString());
        shown.Stdout.ShouldContain("AVAILABLE");
        shown.Stdout.ShouldContain("COPY_DATA");
        // Green is vacuumed and analyzed before AVAILABLE, shown as its own task.
        shown.Stdout.ShouldMatch(@"ANALYZE_GREEN\s+COMPLETED");
        var deleted = await Run("delete", "orders", "--delete-target");
        deleted.ExitCode.ShouldBe(0, deleted.ToString());
        (await Run("list", "--output", "json")).Stdout.Trim().ShouldBe("[]");
    }

    [Fact]
    public async Task TargetParameters_ManagedGreenRunsWithThem_AndVerifyComparesThem()
    {
        await blue.Server.ExecuteAsync("CREATE DATABASE params");
        await blue.Server.ExecuteAsync("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)", "params");
        (await Run("instance", "add", "params", "--connection", blue.Server.Uri("params"))).ExitCode.ShouldBe(0);

        var created = await Run("create", "tuned", "--source", "params", "--target-parameter", "work_mem=12MB", "--target-parameter", "random_page_cost=1.1", "--wait");

        created.ExitCode.ShouldBe(0, created.ToString());
        var verified = await Run("verify", "tuned", "--output", "json");
        verified.ExitCode.ShouldBe(0, verified.ToString());
        using var json = System.Text.Json.JsonDocument.Parse(verified.Stdout);
        var settings = json.RootElement.GetProperty("settings").EnumerateArray().ToDictionary(s => s.GetProperty("name").GetString()!, s => s.GetProperty("actual").GetString());
        // Read from green's server by verify: the values the operator asked for, not the defaults.
        settings["work_mem"].ShouldBe("12MB");
        settings["random_page_cost"].ShouldBe("1.1");
        (await Run("delete", "tuned", "--delete-target")).ExitCode.ShouldBe(0);
        (await Run("instance", "remove", "params")).ExitCode.ShouldBe(0);
    }

    private async Task ShouldHaveCreatedNothingAsync()
    {
        (await Run("list", "--output", "json")).Stdout.Trim().ShouldBe("[]");
        (await _teal.State.ListInstancesAsync(default)).Select(i => i.Name).ShouldBe(["blue"]);
        Directory.EnumerateFileSystemEntries(Path.Combine(_teal.DataDirectory, "instances")).ShouldBeEmpty();
    }

    private Task<CliRun> Run(params string[] args) =>
        CliRun.RunAsync([.. args, "--server", _teal.Url.ToString(), "--data-dir", _teal.DataDirectory]);
}
