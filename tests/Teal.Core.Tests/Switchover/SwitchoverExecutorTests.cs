using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Teal.Core.Deployments;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Core.Events;
using Teal.Core.State;
using Teal.Core.Switchover;
using Teal.Core.Tests.Switchover.Support;

namespace Teal.Core.Tests.Switchover;

/// <summary>
/// The executor's control flow on a fake clock and an in-memory journal: order, undo in
/// reverse, the timeout, retries and their backoff, the stop on a permanent error and its
/// resume, recovery from what the journal says. No database, no real delay; the real steps run
/// in the end-to-end tests.
/// </summary>
public sealed class SwitchoverExecutorTests
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));
    private readonly InMemoryStateStore _state;
    private readonly List<string> _calls = [];

    public SwitchoverExecutorTests()
    {
        _state = new InMemoryStateStore(_time);
    }

    [Fact]
    public async Task RunAsync_AllStepsSucceed_JournalsEveryStepAndCompletes()
    {
        var context = await ContextAsync();

        var result = await Executor().RunAsync(context, Plan(), CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted);
        result.Switchover!.Outcome.ShouldBe(SwitchoverOutcome.Completed);
        _calls.ShouldBe(["do a", "do b", "do flip", "do c"]);
        (await JournalAsync(context)).ShouldBe(
            ["a:Started", "a:Completed", "b:Started", "b:Completed", "flip:Started", "flip:Completed", "c:Started", "c:Completed", "switchover:Closed"]);
        result.Switchover.Phases.Select(p => p.Step).ShouldBe(["a", "b", "flip", "c"]);
    }

    [Fact]
    public async Task RunAsync_WritePause_IsTimedFromTheStepsThatDeclareIt()
    {
        var context = await ContextAsync();
        // Named unlike the real steps: the pause follows the declarations, not the names.
        List<ISwitchoverStep> plan =
        [
            new RecordingStep("a", _calls) { Takes = TimeSpan.FromMilliseconds(30), Clock = _time },
            new RecordingStep("hold", _calls) { Pauses = true },
            new RecordingStep("flip", _calls) { PointOfNoReturn = true, Takes = TimeSpan.FromMilliseconds(50), Clock = _time },
            new RecordingStep("let-go", _calls) { Resumes = true },
            new RecordingStep("after", _calls) { Takes = TimeSpan.FromMilliseconds(70), Clock = _time },
        ];
        var pausedAt = _time.GetUtcNow() + TimeSpan.FromMilliseconds(30);

        var result = await Executor().RunAsync(context, plan, CancellationToken.None);

        var switchover = result.Switchover!;
        switchover.WritePauseMilliseconds!.Value.ShouldBe(50, 0.001);
        switchover.PausedAt.ShouldBe(pausedAt);
        switchover.ResumedAt.ShouldBe(pausedAt + TimeSpan.FromMilliseconds(50));
        (await _state.GetDeploymentAsync(context.Deployment.Id, CancellationToken.None))!.Switchover!.PausedAt.ShouldBe(pausedAt);
    }

    [Fact]
    public async Task RunAsync_StepFailsBeforePointOfNoReturn_UndoesStartedStepsInReverse()
    {
        var context = await ContextAsync();

        var result = await Executor().RunAsync(context, Plan(failing: "b"), CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverFailed);
        result.StatusReason!.ShouldContain("b failed: broke");
        _calls.ShouldBe(["do a", "do b", "undo b", "undo a"]);
        // Each entry once: what was committed before the failure is not written again.
        (await JournalAsync(context)).ShouldBe(
            ["a:Started", "a:Completed", "b:Started", "b:Failed", "b:UndoStarted", "b:Undone", "a:UndoStarted", "a:Undone", "switchover:Closed"]);
    }

    [Fact]
    public async Task RunAsync_StepThatRunsWithPrevious_RunsAtTheSameTimeAndIsJournaledWithIt()
    {
        var context = await ContextAsync();
        var pair = new Handshake();
        List<ISwitchoverStep> plan =
        [
            new RecordingStep("a", _calls),
            new RecordingStep("flip", _calls) { PointOfNoReturn = true, Meet = pair.First },
            new RecordingStep("c", _calls) { WithPrevious = true, Meet = pair.Second },
            new RecordingStep("d", _calls),
        ];

        var result = await Executor().RunAsync(context, plan, CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted, result.StatusReason);
        _calls[^1].ShouldBe("do d");
        var journal = await JournalAsync(context);
        journal.Take(4).ShouldBe(["a:Started", "a:Completed", "flip:Started", "c:Started"]);
        journal.Skip(4).Take(2).ShouldBe(["flip:Completed", "c:Completed"], ignoreOrder: true);
        journal.Skip(6).ShouldBe(["d:Started", "d:Completed", "switchover:Closed"]);
    }

    [Fact]
    public async Task RunAsync_StepJournaledAhead_StartsInTheFlushedCommitBeforeIt_AndItsOwnCommitIsNotFlushed()
    {
        var context = await ContextAsync();

        var result = await Executor().RunAsync(context, AheadPlan(), CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted, result.StatusReason);
        _calls.ShouldBe(["do pause", "do drain", "do fence", "do catch-up", "do flip"]);
        _state.JournalCommits.ShouldBe(
        [
            "flushed: pause:Started, fence:Started",
            "unflushed: pause:Completed, drain:Started",
            // The fence's own commit: drain done, nothing started twice, no flush.
            "unflushed: drain:Completed",
            "unflushed: fence:Completed, catch-up:Started",
            "flushed: catch-up:Completed, flip:Started",
            "flushed: flip:Completed, switchover:Closed",
        ]);
    }

    [Fact]
    public async Task RunAsync_FailsBeforeAStepJournaledAheadRan_RecordsItUndoneWithoutUndoingIt()
    {
        var context = await ContextAsync();

        var result = await Executor().RunAsync(context, AheadPlan(failing: "drain"), CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverFailed);
        result.StatusReason!.ShouldContain("drain failed: broke");
        _calls.ShouldBe(["do pause", "do drain", "undo drain", "undo pause"]);
        var journal = await JournalAsync(context);
        journal.ShouldContain("fence:Undone");
        journal.ShouldNotContain("fence:UndoStarted");
        journal[^1].ShouldBe("switchover:Closed");
    }

    [Fact]
    public async Task RunAsync_StepWorkingAhead_WorksWhileTheStepsBeforeItRun_AndRunsOnlyOnceThatWorkIsDone()
    {
        var context = await ContextAsync();
        // The drain and the fence's work ahead each wait for the other to have begun: they run at once.
        var pair = new Handshake();
        var aheadMayEnd = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        List<string>? committedBeforeTheWork = null;
        List<ISwitchoverStep> plan =
        [
            new RecordingStep("pause", _calls),
            new RecordingStep("drain", _calls) { Undoless = true, Meet = async () => { await pair.First(); aheadMayEnd.SetResult(); } },
            new RecordingStep("fence", _calls)
            {
                Ahead = true,
                WorkAhead = async () =>
                {
                    committedBeforeTheWork = [.. _state.JournalCommits];
                    await pair.Second();
                    await aheadMayEnd.Task;
                    await Task.Delay(50);
                },
            },
            new RecordingStep("flip", _calls) { PointOfNoReturn = true },
        ];

        var result = await Executor().RunAsync(context, plan, CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted, result.StatusReason);
        // Not before the flushed commit that journaled the fence as started: recovery undoes it from there.
        committedBeforeTheWork.ShouldBe(["flushed: pause:Started, fence:Started"]);
        _calls.IndexOf("ahead fence").ShouldBeLessThan(_calls.IndexOf("do fence"));
        // The drain ended before the work ahead (it sleeps 50 ms after the drain let it go); the fence waited for it.
        _calls.IndexOf("ahead done fence").ShouldBeLessThan(_calls.IndexOf("do fence"));
        _calls.Count(c => c == "ahead fence").ShouldBe(1);
        _state.JournalCommits[0].ShouldBe("flushed: pause:Started, fence:Started");
    }

    [Fact]
    public async Task RunAsync_FailsWhileAStepWorksAhead_WaitsForThatWork_ThenUndoesTheStep()
    {
        var context = await ContextAsync();
        var aheadEnded = false;
        List<ISwitchoverStep> plan =
        [
            new RecordingStep("pause", _calls),
            new RecordingStep("drain", _calls) { Undoless = true, Failures = 1 },
            new RecordingStep("fence", _calls) { Ahead = true, WorkAhead = async () => { await Task.Delay(100); aheadEnded = true; } },
            new RecordingStep("flip", _calls) { PointOfNoReturn = true },
        ];

        var result = await Executor().RunAsync(context, plan, CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverFailed);
        result.StatusReason!.ShouldContain("drain failed: broke");
        aheadEnded.ShouldBeTrue();
        _calls.ShouldNotContain("do fence");
        // Its work may have begun: undone after that work ended, before the pause is let go.
        _calls.IndexOf("undo fence").ShouldBeGreaterThan(_calls.IndexOf("ahead done fence"));
        _calls.IndexOf("undo fence").ShouldBeLessThan(_calls.IndexOf("undo pause"));
        var journal = await JournalAsync(context);
        journal.ShouldContain("fence:UndoStarted");
        journal.ShouldContain("fence:Undone");
    }

    [Fact]
    public async Task RunAsync_WorkAheadFails_TheStepFailsWithItsError_AndIsUndone()
    {
        var context = await ContextAsync();
        List<ISwitchoverStep> plan =
        [
            new RecordingStep("pause", _calls),
            new RecordingStep("drain", _calls) { Undoless = true },
            new RecordingStep("fence", _calls) { Ahead = true, WorkAhead = () => throw new IOException("blue did not answer") },
            new RecordingStep("flip", _calls) { PointOfNoReturn = true },
        ];

        var result = await Executor().RunAsync(context, plan, CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverFailed);
        result.StatusReason!.ShouldContain("fence failed: blue did not answer");
        _calls.ShouldNotContain("do fence");
        _calls.ShouldContain("undo fence");
        _calls.ShouldNotContain("do flip");
    }

    [Fact]
    public async Task RecoverAsync_CrashBeforeAStepJournaledAheadRan_UndoesIt_AndNamesTheStepThatWasRunning()
    {
        var context = await ContextAsync();
        // As the flushed pause commit and the drain's unflushed one leave it: the fence journaled, not run.
        await JournalAsync(context, ("pause", JournalAction.Started), ("fence", JournalAction.Started), ("pause", JournalAction.Completed), ("drain", JournalAction.Started));

        var result = await DriveAsync(Executor().RecoverAsync(context, AheadPlan(), await _state.ReadJournalAsync(context.Deployment.Id, CancellationToken.None), CancellationToken.None));

        result.Status.ShouldBe(DeploymentStatus.SwitchoverFailed);
        result.StatusReason!.ShouldContain("Teal stopped during drain");
        // Recovery cannot know whether the fence ran: it undoes it, which is harmless where it did not.
        _calls.ShouldBe(["undo fence", "undo drain", "undo pause"]);
        (await JournalAsync(context)).ShouldContain("drain:Failed");
    }

    [Fact]
    public async Task RunAsync_StepRunningWithPreviousFails_BothAreUndoneAndTheReasonNamesIt()
    {
        var context = await ContextAsync();
        var pair = new Handshake();
        List<ISwitchoverStep> plan =
        [
            new RecordingStep("a", _calls) { Meet = pair.First },
            new RecordingStep("b", _calls) { WithPrevious = true, Meet = pair.Second, Failures = 1 },
            new RecordingStep("flip", _calls) { PointOfNoReturn = true },
        ];

        var result = await Executor().RunAsync(context, plan, CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverFailed);
        result.StatusReason!.ShouldContain("b failed: broke");
        _calls.ShouldNotContain("do flip");
        _calls.TakeLast(2).ShouldBe(["undo b", "undo a"]);
    }

    [Fact]
    public async Task RunAsync_TimeoutPassesBeforePointOfNoReturn_RollsBackWithTheReason()
    {
        var context = await ContextAsync(timeout: TimeSpan.FromSeconds(30));
        List<ISwitchoverStep> plan = [new RecordingStep("a", _calls), new RecordingStep("b", _calls) { Hangs = true }, new RecordingStep("flip", _calls) { PointOfNoReturn = true }];

        var result = await DriveAsync(Executor().RunAsync(context, plan, CancellationToken.None));

        result.Status.ShouldBe(DeploymentStatus.SwitchoverFailed);
        result.StatusReason!.ShouldContain("timeout of 30 s passed during b");
        _calls.ShouldBe(["do a", "do b", "undo b", "undo a"]);
    }

    [Fact]
    public void Backoff_DoublesFromHalfASecond_CappedAtTenSeconds()
    {
        Enumerable.Range(1, 8).Select(a => SwitchoverExecutor.Backoff(a).TotalSeconds).ShouldBe([0.5, 1, 2, 4, 8, 10, 10, 10]);
        SwitchoverExecutor.Backoff(1000).ShouldBe(SwitchoverExecutor.MaxRetryDelay);
    }

    [Fact]
    public async Task RunAsync_TransientErrorAfterPointOfNoReturn_IsRetriedOnTheClockUntilItPasses()
    {
        var context = await ContextAsync();
        var c = new RecordingStep("c", _calls) { Failures = 6, Failure = () => new IOException("connection reset") };
        List<ISwitchoverStep> plan = [new RecordingStep("a", _calls), new RecordingStep("flip", _calls) { PointOfNoReturn = true }, c];
        var started = _time.GetUtcNow();

        var result = await DriveAsync(Executor().RunAsync(context, plan, CancellationToken.None));

        result.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted, result.StatusReason);
        c.Attempts.ShouldBe(7);
        // 0.5 + 1 + 2 + 4 + 8 + 10 s of backoff, all on the fake clock.
        (_time.GetUtcNow() - started).ShouldBeGreaterThanOrEqualTo(TimeSpan.FromSeconds(25.5));
        var retries = _state.Events.Where(e => e.Kind == EventKinds.SwitchoverRetrying).ToList();
        retries.ShouldNotBeEmpty();
        retries[0].Message.ShouldContain("c failed after the point of no return (connection reset)");
    }

    [Fact]
    public async Task RunAsync_PermanentErrorAfterPointOfNoReturn_StopsWithTheStepTheErrorAndTheFix()
    {
        var context = await ContextAsync();
        var c = new RecordingStep("c", _calls) { Failures = int.MaxValue, Failure = () => new TealException("test.broken", "c is broken", "repair c") };
        List<ISwitchoverStep> plan = [new RecordingStep("a", _calls), new RecordingStep("flip", _calls) { PointOfNoReturn = true }, c, new RecordingStep("d", _calls)];

        var result = await DriveAsync(Executor().RunAsync(context, plan, CancellationToken.None));

        c.Attempts.ShouldBe(1, "a permanent error is not retried");
        _calls.ShouldNotContain("do d");
        result.Status.ShouldBe(DeploymentStatus.SwitchoverStopped);
        result.Switchover!.Outcome.ShouldBe(SwitchoverOutcome.Stopped);
        result.Switchover.Phase.ShouldBe("c");
        result.Switchover.Reason!.ShouldContain("c failed after the point of no return: c is broken");
        result.Switchover.Hint!.ShouldContain("repair c");
        result.Switchover.Hint!.ShouldContain("teal switchover upgrade --resume");
        _state.Events.ShouldContain(e => e.Kind == EventKinds.SwitchoverStopped && e.Message.Contains("c is broken"));
        (await JournalAsync(context)).ShouldNotContain("switchover:Closed", "the journal stays open for --resume");
    }

    [Theory]
    [InlineData("completes", EventKinds.SwitchoverCompleted)]
    [InlineData("rolls back", EventKinds.SwitchoverCanceled)]
    [InlineData("stops", EventKinds.SwitchoverStopped)]
    public async Task RunAsync_TheOutcomeAndItsEvents_AreWrittenInOneCommit(string outcome, string kind)
    {
        var context = await ContextAsync();
        List<ISwitchoverStep> plan = outcome switch
        {
            "completes" => Plan(),
            "rolls back" => Plan(failing: "b"),
            _ => [new RecordingStep("a", _calls) { Outcome = "a-done" }, new RecordingStep("flip", _calls) { PointOfNoReturn = true }, new RecordingStep("c", _calls) { Failures = int.MaxValue, Failure = () => new TealException("test.broken", "c is broken", "repair c") }],
        };
        // What an API client reading right after each commit sees: the first commit that shows
        // the outcome must already hold the event that tells it (and the ones queued during the pause).
        List<string>? seenWithOutcome = null;
        _state.Applied = () =>
        {
            var status = _state.GetDeploymentAsync(context.Deployment.Id, CancellationToken.None).Result!.Status;
            if (seenWithOutcome is null && status is DeploymentStatus.SwitchoverCompleted or DeploymentStatus.SwitchoverFailed or DeploymentStatus.SwitchoverStopped)
            {
                seenWithOutcome = [.. _state.Events.Select(e => e.Kind)];
            }
        };

        await DriveAsync(Executor().RunAsync(context, plan, CancellationToken.None));

        seenWithOutcome.ShouldNotBeNull();
        seenWithOutcome.ShouldContain(kind);
        seenWithOutcome.ShouldBe(_state.Events.Select(e => e.Kind).ToList(), "nothing of the switchover's is written after its outcome");
        if (outcome == "stops")
        {
            seenWithOutcome.ShouldContain("a-done");
        }
    }

    [Fact]
    public async Task RecoverAsync_AfterAStop_ContinuesFromTheStoppedStepWithoutRepeatingEvents()
    {
        var context = await ContextAsync();
        var c = new RecordingStep("c", _calls) { Failures = 1, Failure = () => new TealException("test.broken", "c is broken", "repair c") };
        List<ISwitchoverStep> plan =
        [
            new RecordingStep("a", _calls) { Outcome = "a-done" },
            new RecordingStep("flip", _calls) { PointOfNoReturn = true, Outcome = "flipped" },
            c,
        ];
        var stopped = await DriveAsync(Executor().RunAsync(context, plan, CancellationToken.None));
        stopped.Status.ShouldBe(DeploymentStatus.SwitchoverStopped);
        _calls.Clear();

        var resumed = await DriveAsync(Executor().RecoverAsync(await ContextFromStoreAsync(context), plan, await _state.ReadJournalAsync(context.Deployment.Id, CancellationToken.None), CancellationToken.None));

        resumed.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted, resumed.StatusReason);
        _calls.ShouldBe(["do c"]);
        _state.Events.Count(e => e.Kind == "a-done").ShouldBe(1);
        _state.Events.Count(e => e.Kind == "flipped").ShouldBe(1);
        resumed.Switchover!.Phases.Select(p => p.Step).ShouldBe(["a", "flip", "c"]);
    }

    [Fact]
    public async Task RunAsync_UnfenceFailsDuringRollback_EndpointsStayHeldUntilItSucceeds_AnEventEachAttempt()
    {
        var endpoint = new RecordingEndpoint(_calls);
        var context = await ContextAsync(endpoints: [endpoint]);
        List<ISwitchoverStep> plan =
        [
            new RecordingStep("pause", _calls),
            new RecordingStep("fence", _calls) { UndoFailures = 3 },
            new RecordingStep("b", _calls) { Failures = 1 },
            new RecordingStep("flip", _calls) { PointOfNoReturn = true },
        ];

        var result = await DriveAsync(Executor().RunAsync(context, plan, CancellationToken.None));

        result.Status.ShouldBe(DeploymentStatus.SwitchoverFailed);
        // "undo pause" (the endpoints' resume) only once blue is unfenced.
        _calls.ShouldBe(["do pause", "do fence", "do b", "undo b", "undo fence", "undo fence", "undo fence", "undo fence", "undo pause"]);
        _state.Events.Count(e => e.Kind == EventKinds.SwitchoverRetrying && e.Message.Contains("undoing fence failed")).ShouldBe(3);
        (await JournalAsync(context)).ShouldContain("switchover:Closed");
    }

    [Fact]
    public async Task RunAsync_UnfenceStillFailingWhenTealStops_JournalStaysOpenAndClientsStayHeld()
    {
        var endpoint = new RecordingEndpoint(_calls, paused: true);
        var context = await ContextAsync(endpoints: [endpoint]);
        using var stopping = new CancellationTokenSource();
        List<ISwitchoverStep> plan =
        [
            new RecordingStep("pause", _calls),
            new RecordingStep("fence", _calls) { UndoFailures = int.MaxValue, OnUndoFailure = stopping.Cancel },
            new RecordingStep("b", _calls) { Failures = 1 },
            new RecordingStep("flip", _calls) { PointOfNoReturn = true },
        ];

        var result = await DriveAsync(Executor().RunAsync(context, plan, stopping.Token));

        result.Status.ShouldBe(DeploymentStatus.SwitchoverInProgress, "not closed as if all was well");
        _calls.ShouldNotContain("undo pause");
        _calls.ShouldNotContain("resume endpoint");
        endpoint.Paused.ShouldBeTrue();
        var journal = await JournalAsync(context);
        journal.ShouldNotContain("switchover:Closed");
        journal.ShouldNotContain("fence:Undone");
    }

    [Fact]
    public async Task RecoverAsync_FlipHadStarted_HoldsAndDrainsEndpointsFirst_ThenFinishesAndResumes()
    {
        // A proxy endpoint comes up holding after a restart.
        var endpoint = new RecordingEndpoint(_calls, paused: true);
        var context = await ContextAsync(endpoints: [endpoint]);
        await JournalAsync(context, ("a", JournalAction.Started), ("a", JournalAction.Completed), ("b", JournalAction.Started), ("b", JournalAction.Completed), ("flip", JournalAction.Started));

        var result = await DriveAsync(Executor().RecoverAsync(context, Plan(), await _state.ReadJournalAsync(context.Deployment.Id, CancellationToken.None), CancellationToken.None));

        result.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted);
        _calls.ShouldBe(["pause endpoint", "drain endpoint", "do flip", "do c", "resume endpoint"]);
        endpoint.Paused.ShouldBeFalse();
    }

    [Fact]
    public async Task RecoverAsync_RollForward_RecordsTheOutcomesOfStepsDoneBeforeTheCrash_AndKeepsTheirTimings()
    {
        var context = await ContextAsync(phases: [new PhaseTiming("a", "done", 3), new PhaseTiming("b", "done", 4)]);
        await JournalAsync(context, ("a", JournalAction.Started), ("a", JournalAction.Completed), ("b", JournalAction.Started), ("b", JournalAction.Completed), ("flip", JournalAction.Started), ("flip", JournalAction.Completed));
        List<ISwitchoverStep> plan =
        [
            new RecordingStep("a", _calls),
            new RecordingStep("b", _calls) { Outcome = EventKinds.SequencesSynced },
            new RecordingStep("flip", _calls) { PointOfNoReturn = true, Outcome = EventKinds.MemberRenamed },
            new RecordingStep("c", _calls) { Outcome = EventKinds.Positions },
        ];

        var result = await DriveAsync(Executor().RecoverAsync(context, plan, await _state.ReadJournalAsync(context.Deployment.Id, CancellationToken.None), CancellationToken.None));

        result.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted);
        _calls.ShouldBe(["do c"]);
        _state.Events.Select(e => e.Kind).ShouldBe([EventKinds.SequencesSynced, EventKinds.MemberRenamed, EventKinds.Positions, EventKinds.SwitchoverPhase, EventKinds.SwitchoverCompleted], ignoreOrder: true);
        result.Switchover!.Phases.Select(p => p.Step).ShouldBe(["a", "b", "c"]);
    }

    [Fact]
    public async Task RecoverAsync_StoppedBeforeFlip_UndoesEveryStartedStepInReverse_ThenResumesHeldEndpoints()
    {
        var endpoint = new RecordingEndpoint(_calls, paused: true);
        var context = await ContextAsync(endpoints: [endpoint]);
        await JournalAsync(context, ("a", JournalAction.Started), ("a", JournalAction.Completed), ("b", JournalAction.Started));

        var result = await DriveAsync(Executor().RecoverAsync(context, Plan(), await _state.ReadJournalAsync(context.Deployment.Id, CancellationToken.None), CancellationToken.None));

        result.Status.ShouldBe(DeploymentStatus.SwitchoverFailed);
        result.StatusReason!.ShouldContain("Teal stopped during b");
        _calls.ShouldBe(["undo b", "undo a", "resume endpoint"]);
    }

    [Fact]
    public async Task RecoverAsync_NothingJournaledYet_TheReasonNamesTheGuardrails()
    {
        var context = await ContextAsync();

        var result = await DriveAsync(Executor().RecoverAsync(context, Plan(), [], CancellationToken.None));

        result.Status.ShouldBe(DeploymentStatus.SwitchoverFailed);
        result.StatusReason!.ShouldContain("Teal stopped during guardrails");
        result.StatusReason!.ShouldNotContain("(none)");
    }

    [Fact]
    public async Task RunAsync_MonitorWritesDuringTheSwitchover_ItsUpdateIsKept()
    {
        var context = await ContextAsync();
        var recorder = new DeploymentRecorder(_state, _time);
        var observedAt = _time.GetUtcNow() + TimeSpan.FromMinutes(5);
        List<ISwitchoverStep> plan =
        [
            new RecordingStep("a", _calls) { Meet = () => recorder.UpdateAsync(context.Deployment.Id, d => d with { Replication = d.Replication with { ObservedAt = observedAt } }, CancellationToken.None) },
            new RecordingStep("b", _calls),
            new RecordingStep("flip", _calls) { PointOfNoReturn = true },
        ];

        var result = await Executor().RunAsync(context, plan, CancellationToken.None);

        // The executor's later commits change its own fields on the stored record, never write back a stale copy.
        result.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted);
        result.Replication.ObservedAt.ShouldBe(observedAt);
        (await recorder.GetAsync(context.Deployment.Id, CancellationToken.None)).Replication.ObservedAt.ShouldBe(observedAt);
    }

    private SwitchoverExecutor Executor() => new(_state, [], TransientErrors.Neutral, NullLogger<SwitchoverExecutor>.Instance);

    private List<ISwitchoverStep> Plan(string? failing = null) =>
    [
        new RecordingStep("a", _calls) { Failures = failing == "a" ? 1 : 0 },
        new RecordingStep("b", _calls) { Failures = failing == "b" ? 1 : 0 },
        new RecordingStep("flip", _calls) { PointOfNoReturn = true, Failures = failing == "flip" ? 1 : 0 },
        new RecordingStep("c", _calls) { Failures = failing == "c" ? 1 : 0 },
    ];

    /// <summary>The write pause's shape: pause (undo), drain (nothing to undo), fence (journaled ahead), catch-up, flip.</summary>
    private List<ISwitchoverStep> AheadPlan(string? failing = null) =>
    [
        new RecordingStep("pause", _calls) { Failures = failing == "pause" ? 1 : 0 },
        new RecordingStep("drain", _calls) { Undoless = true, Failures = failing == "drain" ? 1 : 0 },
        new RecordingStep("fence", _calls) { Ahead = true, Failures = failing == "fence" ? 1 : 0 },
        new RecordingStep("catch-up", _calls) { Undoless = true },
        new RecordingStep("flip", _calls) { PointOfNoReturn = true },
    ];

    /// <summary>Advances the fake clock in small ticks until <paramref name="task"/> ends: waits cost no real time.</summary>
    private async Task<T> DriveAsync<T>(Task<T> task)
    {
        for (var i = 0; i < 100_000 && !task.IsCompleted; i++)
        {
            _time.Advance(TimeSpan.FromMilliseconds(100));
            await Task.Delay(1);
        }

        return await task;
    }

    private async Task<List<string>> JournalAsync(SwitchoverContext context) =>
        [.. (await _state.ReadJournalAsync(context.Deployment.Id, CancellationToken.None)).Select(e => $"{e.Step}:{e.Action}")];

    private async Task JournalAsync(SwitchoverContext context, params (string Step, JournalAction Action)[] entries)
    {
        foreach (var (step, action) in entries)
        {
            await _state.AppendJournalAsync(new JournalEntry(context.Deployment.Id, context.SwitchoverId, step, action, _time.GetUtcNow()), CancellationToken.None);
        }
    }

    private async Task<SwitchoverContext> ContextAsync(TimeSpan? timeout = null, IReadOnlyList<IEndpoint>? endpoints = null, IReadOnlyList<PhaseTiming>? phases = null)
    {
        var now = _time.GetUtcNow();
        var deployment = new Deployment(DeploymentId.New(), "upgrade", DeploymentStatus.SwitchoverInProgress)
        {
            Blue = "app",
            Green = "app-green-abc123",
            Database = "app",
            Switchover = new SwitchoverState("so-test", now, 300) { Phase = "guardrails", Phases = phases ?? [] },
            CreatedAt = now,
        };
        await _state.AddDeploymentAsync(deployment, CancellationToken.None);
        return NewContext(deployment, endpoints ?? [], now + (timeout ?? TimeSpan.FromHours(1)));
    }

    /// <summary>A fresh context on the deployment as stored (what <c>--resume</c> builds).</summary>
    private async Task<SwitchoverContext> ContextFromStoreAsync(SwitchoverContext previous)
    {
        var stored = await _state.GetDeploymentAsync(previous.Deployment.Id, CancellationToken.None);
        return NewContext(stored!, previous.Endpoints, previous.Deadline);
    }

    private SwitchoverContext NewContext(Deployment deployment, IReadOnlyList<IEndpoint> endpoints, DateTimeOffset deadline) =>
        new()
        {
            SwitchoverId = "so-test",
            Deployment = deployment,
            Current = deployment,
            Link = new UnusedLink(),
            Endpoints = endpoints,
            Options = new SwitchoverOptions { Timeout = deadline - _time.GetUtcNow() },
            State = _state,
            Time = _time,
            Deadline = deadline,
        };

    /// <summary>Two steps that each wait (10 s at most) until the other one has started.</summary>
    private sealed class Handshake
    {
        private readonly TaskCompletionSource _first = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _second = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task First()
        {
            _first.TrySetResult();
            return _second.Task.WaitAsync(TimeSpan.FromSeconds(10));
        }

        public Task Second()
        {
            _second.TrySetResult();
            return _first.Task.WaitAsync(TimeSpan.FromSeconds(10));
        }
    }
}
