using Microsoft.Extensions.Logging.Abstractions;
using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.Core.Switchover;
using Teal.Core.State;
using Teal.Postgres.Engines;
using Teal.Server.State;
using Teal.Testing;

namespace Teal.Server.Tests.Switchover;

/// <summary>
/// The executor's control flow against the real SQLite journal: order, undo in reverse, the
/// timeout, roll-forward past the point of no return, and recovery from what the journal says.
/// The steps here only record what happened to them; the real steps run in the end-to-end tests.
/// </summary>
public sealed class SwitchoverExecutorTests : IDisposable
{
    private readonly string _directory = TestDirectories.NewDirectory("executor");
    private readonly SqliteStateStore _state;
    private readonly List<string> _calls = [];

    public SwitchoverExecutorTests()
    {
        _state = new SqliteStateStore(_directory, TimeProvider.System, new EventSignal());
    }

    [Fact]
    public async Task RunAsync_AllStepsSucceed_JournalsEveryStepAndCompletes()
    {
        var context = await ContextAsync();
        var plan = Plan();

        var result = await Executor().RunAsync(context, plan, CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted);
        result.Switchover!.Outcome.ShouldBe(SwitchoverOutcome.Completed);
        _calls.ShouldBe(["do a", "do b", "do flip", "do c"]);
        var journal = await _state.ReadJournalAsync(context.Deployment.Id, CancellationToken.None);
        journal.Select(e => $"{e.Step}:{e.Action}").ShouldBe(
            ["a:Started", "a:Completed", "b:Started", "b:Completed", "flip:Started", "flip:Completed", "c:Started", "c:Completed", "switchover:Closed"]);
        result.Switchover.Phases.Select(p => p.Step).ShouldBe(["a", "b", "flip", "c"]);
    }

    [Fact]
    public async Task RunAsync_WritePause_IsMeasuredFromPauseToResume_WithWallClockTimes()
    {
        var context = await ContextAsync();
        var pause = new RecordingStep("pause-endpoints", _calls, 0, false);
        var flip = new RecordingStep("flip", _calls, 0, false) { PointOfNoReturn = true, Milliseconds = 50 };
        var resume = new RecordingStep("resume-endpoints", _calls, 0, false);
        var stop = new RecordingStep("stop-replication", _calls, 0, false) { Milliseconds = 50 };
        List<ISwitchoverStep> plan = [new RecordingStep("guardrails", _calls, 0, false), pause, flip, resume, stop];

        var result = await Executor().RunAsync(context, plan, CancellationToken.None);

        // Ordering, not speed: the pause covers the flip and ends before the replication stop.
        var switchover = result.Switchover!;
        switchover.PausedAt.ShouldNotBeNull();
        switchover.ResumedAt.ShouldNotBeNull();
        switchover.PausedAt.Value.ShouldBeLessThanOrEqualTo(pause.StartedAt);
        switchover.ResumedAt.Value.ShouldBeGreaterThanOrEqualTo(resume.EndedAt);
        switchover.ResumedAt.Value.ShouldBeLessThanOrEqualTo(stop.StartedAt);
        switchover.WritePauseMilliseconds!.Value.ShouldBeGreaterThanOrEqualTo((flip.EndedAt - flip.StartedAt).TotalMilliseconds - 1, "the pause spans the flip");
        switchover.WritePauseMilliseconds.Value.ShouldBeLessThan((stop.StartedAt - switchover.PausedAt.Value).TotalMilliseconds + 1, "the pause ends before the replication stop");
        var stored = await _state.GetDeploymentAsync(context.Deployment.Id, CancellationToken.None);
        stored!.Switchover!.PausedAt.ShouldBe(switchover.PausedAt);
        stored.Switchover.ResumedAt.ShouldBe(switchover.ResumedAt);
    }

    [Fact]
    public async Task RunAsync_StepFailsBeforePointOfNoReturn_UndoesStartedStepsInReverse()
    {
        var context = await ContextAsync();
        var plan = Plan(failing: "b");

        var result = await Executor().RunAsync(context, plan, CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverFailed);
        result.StatusReason!.ShouldContain("b failed: b broke");
        _calls.ShouldBe(["do a", "do b", "undo b", "undo a"]);
        // Each entry once: what was committed before the failure is not written again.
        (await _state.ReadJournalAsync(context.Deployment.Id, CancellationToken.None)).Select(e => $"{e.Step}:{e.Action}").ShouldBe(
            ["a:Started", "a:Completed", "b:Started", "b:Failed", "b:UndoStarted", "b:Undone", "a:UndoStarted", "a:Undone", "switchover:Closed"]);
    }

    [Fact]
    public async Task RunAsync_StepThatRunsWithPrevious_RunsAtTheSameTimeAndIsJournaledWithIt()
    {
        var context = await ContextAsync();
        // Each of the pair waits until the other has started: run one after the other, they would time out.
        var pair = new Handshake();
        List<ISwitchoverStep> plan =
        [
            new RecordingStep("a", _calls, 0, false),
            new RecordingStep("flip", _calls, 0, false) { PointOfNoReturn = true, Meet = pair.First },
            new RecordingStep("c", _calls, 0, false) { WithPrevious = true, Meet = pair.Second },
            new RecordingStep("d", _calls, 0, false),
        ];

        var result = await Executor().RunAsync(context, plan, CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted, result.StatusReason);
        _calls[^1].ShouldBe("do d");
        var journal = (await _state.ReadJournalAsync(context.Deployment.Id, CancellationToken.None)).Select(e => $"{e.Step}:{e.Action}").ToList();
        journal.Take(4).ShouldBe(["a:Started", "a:Completed", "flip:Started", "c:Started"]);
        journal.Skip(4).Take(2).ShouldBe(["flip:Completed", "c:Completed"], ignoreOrder: true);
        journal.Skip(6).ShouldBe(["d:Started", "d:Completed", "switchover:Closed"]);
    }

    [Fact]
    public async Task RunAsync_StepRunningWithPreviousFails_BothAreUndoneAndTheReasonNamesIt()
    {
        var context = await ContextAsync();
        var pair = new Handshake();
        List<ISwitchoverStep> plan =
        [
            new RecordingStep("a", _calls, 0, false) { Meet = pair.First },
            new RecordingStep("b", _calls, 1, false) { WithPrevious = true, Meet = pair.Second },
            new RecordingStep("flip", _calls, 0, false) { PointOfNoReturn = true },
        ];

        var result = await Executor().RunAsync(context, plan, CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverFailed);
        result.StatusReason!.ShouldContain("b failed: b broke");
        _calls.ShouldNotContain("do flip");
        _calls.TakeLast(2).ShouldBe(["undo b", "undo a"]);
    }

    [Fact]
    public async Task RunAsync_TimeoutPassesBeforePointOfNoReturn_RollsBackWithTheReason()
    {
        var context = await ContextAsync(timeout: TimeSpan.FromMilliseconds(300));
        var plan = Plan(slow: "b");

        var result = await Executor().RunAsync(context, plan, CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverFailed);
        result.StatusReason!.ShouldContain("timeout");
        _calls.ShouldBe(["do a", "do b", "undo b", "undo a"]);
    }

    [Fact]
    public async Task RunAsync_StepFailsAfterPointOfNoReturn_IsRetriedNotUndone()
    {
        var context = await ContextAsync();
        var plan = Plan(failing: "c", failures: 2);

        var result = await Executor().RunAsync(context, plan, CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted);
        _calls.ShouldBe(["do a", "do b", "do flip", "do c", "do c", "do c"]);
    }

    [Fact]
    public async Task RecoverAsync_FlipHadStarted_RollsForwardWithoutRepeatingCompletedSteps()
    {
        var context = await ContextAsync();
        await JournalAsync(context, ("a", JournalAction.Started), ("a", JournalAction.Completed), ("b", JournalAction.Started), ("b", JournalAction.Completed), ("flip", JournalAction.Started));

        var result = await Executor().RecoverAsync(context, Plan(), await _state.ReadJournalAsync(context.Deployment.Id, CancellationToken.None), CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted);
        _calls.ShouldBe(["do flip", "do c"]);
    }

    [Fact]
    public async Task RecoverAsync_StoppedBeforeFlip_UndoesEveryStartedStepInReverse()
    {
        var context = await ContextAsync();
        await JournalAsync(context, ("a", JournalAction.Started), ("a", JournalAction.Completed), ("b", JournalAction.Started));

        var result = await Executor().RecoverAsync(context, Plan(), await _state.ReadJournalAsync(context.Deployment.Id, CancellationToken.None), CancellationToken.None);

        result.Status.ShouldBe(DeploymentStatus.SwitchoverFailed);
        result.StatusReason!.ShouldContain("Teal stopped during b");
        _calls.ShouldBe(["undo b", "undo a"]);
    }

    public void Dispose()
    {
        _state.Dispose();
        Directory.Delete(_directory, recursive: true);
    }

    private SwitchoverExecutor Executor() => new(_state, [], NullLogger<SwitchoverExecutor>.Instance);

    private List<ISwitchoverStep> Plan(string? failing = null, int failures = int.MaxValue, string? slow = null) =>
    [
        new RecordingStep("a", _calls, failing == "a" ? failures : 0, slow == "a"),
        new RecordingStep("b", _calls, failing == "b" ? failures : 0, slow == "b"),
        new RecordingStep("flip", _calls, failing == "flip" ? failures : 0, slow == "flip") { PointOfNoReturn = true },
        new RecordingStep("c", _calls, failing == "c" ? failures : 0, slow == "c"),
    ];

    private async Task JournalAsync(SwitchoverContext context, params (string Step, JournalAction Action)[] entries)
    {
        foreach (var (step, action) in entries)
        {
            await _state.AppendJournalAsync(new JournalEntry(context.Deployment.Id, context.SwitchoverId, step, action, DateTimeOffset.UtcNow), CancellationToken.None);
        }
    }

    private async Task<SwitchoverContext> ContextAsync(TimeSpan? timeout = null)
    {
        var now = DateTimeOffset.UtcNow;
        var deployment = new Deployment(DeploymentId.New(), "upgrade", DeploymentStatus.SwitchoverInProgress)
        {
            Blue = "app",
            Green = "app-green-abc123",
            Database = "app",
            Switchover = new SwitchoverState("so-test", now, 300),
            CreatedAt = now,
        };
        await _state.AddDeploymentAsync(deployment, CancellationToken.None);
        // The recording steps never touch the link; it opens no connection until used.
        var link = new PostgresEngine(TestDirectories.Catalog, TimeProvider.System).Link(
            new LinkSpec("teal_test", new ConnectionInfo("127.0.0.1", 1, "u", null, "app"), new ConnectionInfo("127.0.0.1", 2, "u", null, "app")));
        return new SwitchoverContext
        {
            SwitchoverId = "so-test",
            Deployment = deployment,
            Current = deployment,
            Link = link,
            Endpoints = [],
            Options = new SwitchoverOptions(),
            State = _state,
            Time = TimeProvider.System,
            Deadline = now + (timeout ?? TimeSpan.FromMinutes(5)),
        };
    }

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

    private sealed class RecordingStep(string name, List<string> calls, int failures, bool slow) : ISwitchoverStep
    {
        private int _failed;

        public string Name => name;

        public string Description => name;

        public bool PointOfNoReturn { get; init; }

        /// <summary>How long the step takes when it succeeds.</summary>
        public int Milliseconds { get; init; }

        public bool WithPrevious { get; init; }

        /// <summary>Called when the step starts; returns once its partner has started too.</summary>
        public Func<Task>? Meet { get; init; }

        bool ISwitchoverStep.IsPointOfNoReturn => PointOfNoReturn;

        bool ISwitchoverStep.RunsWithPrevious => WithPrevious;

        /// <summary>Wall clock when the step last started and ended.</summary>
        public DateTimeOffset StartedAt { get; private set; }

        public DateTimeOffset EndedAt { get; private set; }

        public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
        {
            StartedAt = DateTimeOffset.UtcNow;
            try
            {
                await RunAsync(cancellationToken);
            }
            finally
            {
                EndedAt = DateTimeOffset.UtcNow;
            }
        }

        private async Task RunAsync(CancellationToken cancellationToken)
        {
            lock (calls)
            {
                calls.Add("do " + name);
            }

            if (Meet is not null)
            {
                await Meet();
            }
            if (Milliseconds > 0)
            {
                await Task.Delay(Milliseconds, cancellationToken);
            }

            if (slow)
            {
                await Task.Delay(TimeSpan.FromSeconds(30), cancellationToken);
            }

            if (_failed < failures)
            {
                _failed++;
                throw new InvalidOperationException($"{name} broke");
            }
        }

        public Task UndoAsync(SwitchoverContext context, CancellationToken cancellationToken)
        {
            calls.Add("undo " + name);
            return Task.CompletedTask;
        }
    }
}
