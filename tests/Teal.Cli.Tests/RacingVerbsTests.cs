using Microsoft.Extensions.DependencyInjection;
using Teal.Core.Deployments;
using Teal.Core.Hosting;
using Teal.Core.Switchover;
using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Cli.Tests;

/// <summary>
/// Verbs that race Teal's own background work on a deployment. `teal delete` while monitor
/// rounds keep running (here back to back, far more often than the poll interval): no heartbeat
/// written while Teal's objects are dropped keeps blue's `teal` schema alive, no round runs on the
/// link the delete closes, and the delete succeeds, before and after a switchover. `teal finish`
/// right after `teal switchover --wait`: the run stores its outcome (what `--wait` returns on) and
/// only then closes the link it left and lets the deployment go; the finish waits for that
/// instead of answering "already running".
/// </summary>
public sealed class RacingVerbsTests : IAsyncLifetime
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
    public async Task Delete_WhileMonitorRoundsRunBackToBack_RemovesBluesTealSchema()
    {
        (await Run("create", "first", "--source", "app", "--wait")).ExitCode.ShouldBe(0);
        (await _blue.ScalarAsync<long>("SELECT count(*) FROM pg_namespace WHERE nspname = 'teal'")).ShouldBe(1);

        var (deleted, failures) = await WhileMonitoringAsync(() => Run("delete", "first", "--delete-target"));

        deleted.ExitCode.ShouldBe(0, deleted.ToString());
        failures.ShouldBeEmpty();
        (await _blue.ScalarAsync<long>("SELECT count(*) FROM pg_namespace WHERE nspname = 'teal'")).ShouldBe(0, "a heartbeat written during the delete kept blue's teal schema");
        (await _teal.State.FindDeploymentAsync("first", default)).ShouldBeNull();
    }

    [Fact]
    public async Task Delete_AfterSwitchover_WhileMonitorRoundsRunBackToBack_Succeeds()
    {
        (await Run("create", "first", "--source", "app", "--wait")).ExitCode.ShouldBe(0);
        var switched = await Run("switchover", "first", "--wait");
        switched.ExitCode.ShouldBe(0, switched.ToString());

        var (deleted, failures) = await WhileMonitoringAsync(() => Run("delete", "first"));

        deleted.ExitCode.ShouldBe(0, deleted.ToString());
        failures.ShouldBeEmpty();
        (await _teal.State.FindDeploymentAsync("first", default)).ShouldBeNull();
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

    /// <summary>Runs <paramref name="act"/> while monitor rounds run back to back; returns what it gave and every round that failed.</summary>
    private async Task<(CliRun Result, List<Exception> Failures)> WhileMonitoringAsync(Func<Task<CliRun>> act)
    {
        var monitor = _teal.Services.GetRequiredService<ReplicationMonitor>();
        var failures = new List<Exception>();
        using var stop = new CancellationTokenSource();
        var rounds = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    await monitor.PollOnceAsync(stop.Token);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                }
                catch (Exception ex)
                {
                    // A round reports an unreadable side as STOPPED; an exception is a round run on a closed link.
                    failures.Add(ex);
                }
            }
        });
        try
        {
            return (await act(), failures);
        }
        finally
        {
            await stop.CancelAsync();
            await rounds;
        }
    }

    private Task<CliRun> Run(params string[] args) =>
        CliRun.RunAsync([.. args, "--server", _teal.Url.ToString(), "--data-dir", _teal.DataDirectory]);
}
