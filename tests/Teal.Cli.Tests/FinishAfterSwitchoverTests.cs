using Microsoft.Extensions.DependencyInjection;
using Teal.Core.Deployments;
using Teal.Core.Hosting;
using Teal.Core.Switchover;
using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Cli.Tests;

/// <summary>
/// `teal finish` right after `teal switchover --wait`: the switchover's run stores its outcome
/// (what `--wait` returns on) and only then closes the link of the direction it left and lets
/// the deployment go. The finish waits for that instead of answering "already running".
/// </summary>
public sealed class FinishAfterSwitchoverTests : IAsyncLifetime
{
    private TealHost _teal = null!; // Set in InitializeAsync, before any test runs.
    private PostgresServer _blue = null!; // Set in InitializeAsync.

    public async Task InitializeAsync()
    {
        _blue = await PostgresServer.StartAsync("15");
        _teal = await TealHost.StartAsync();
        await _blue.ExecuteAsync("CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50) g");
        (await Run("instance", "add", "app", "--connection", _blue.Uri())).ExitCode.ShouldBe(0);
    }

    public async Task DisposeAsync()
    {
        await _teal.DisposeAsync();
        await _blue.DisposeAsync();
    }

    [Fact]
    public async Task Finish_WhileTheCompletedSwitchoverStillHoldsTheDeployment_WaitsAndFinishes()
    {
        (await Run("create", "first", "--source", "app", "--wait")).ExitCode.ShouldBe(0);
        var id = (await _teal.State.FindDeploymentAsync("first", default))!.Id;
        var background = _teal.Services.GetRequiredService<BackgroundWork>();
        // Holding the deployment's links keeps the run in its last act (closing the forward
        // link) for as long as the test wants, instead of the few milliseconds it takes.
        var hold = await _teal.Services.GetRequiredService<DeploymentLinks>().HoldAsync(id, default);
        CliRun finished;
        try
        {
            var switched = await Run("switchover", "first", "--wait");
            switched.ExitCode.ShouldBe(0, switched.ToString());
            background.IsRunning(SwitchoverService.WorkKey(id)).ShouldBeTrue("the run still holds the deployment after --wait returned");

            var finishing = Run("finish", "first");
            await Task.WhenAny(finishing, Task.Delay(TimeSpan.FromSeconds(5)));
            finishing.IsCompleted.ShouldBeFalse(finishing.IsCompleted ? (await finishing).ToString() : null);
            background.IsRunning(SwitchoverService.WorkKey(id)).ShouldBeTrue();
            await hold.DisposeAsync();
            finished = await finishing;
        }
        finally
        {
            await hold.DisposeAsync();
        }

        finished.ExitCode.ShouldBe(0, finished.ToString());
        finished.Stdout.ShouldContain("first finished");
    }

    private Task<CliRun> Run(params string[] args) =>
        CliRun.RunAsync([.. args, "--server", _teal.Url.ToString(), "--data-dir", _teal.DataDirectory]);
}
