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
        List<ISwitchoverStep> plan =
        [
            new RecordingStep("guardrails", _calls, 0, false),
            new RecordingStep("pause-endpoints", _calls, 0, false),
            new RecordingStep("flip", _calls, 0, false) { PointOfNoReturn = true, Milliseconds = 50 },
            new RecordingStep("resume-endpoints", _calls, 0, false),
            new RecordingStep("stop-replication", _calls, 0, false) { Milliseconds = 200 },
        ];
        var before = DateTimeOffset.UtcNow;

        var result = await Executor().RunAsync(context, plan, CancellationToken.None);

        var switchover = result.Switchover!;
        switchover.PausedAt.ShouldNotBeNull();
        switchover.ResumedAt.ShouldNotBeNull();
        switchover.PausedAt.Value.ShouldBeGreaterThanOrEqualTo(before);
        var wall = (switchover.ResumedAt.Value - switchover.PausedAt.Value).TotalMilliseconds;
        switchover.WritePauseMilliseconds!.Value.ShouldBeInRange(50, 190, "the pause spans the flip, not the replication stop after resume");
        wall.ShouldBeInRange(switchover.WritePauseMilliseconds.Value - 5, switchover.WritePauseMilliseconds.Value + 5);
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
        (await _state.ReadJournalAsync(context.Deployment.Id, CancellationToken.None))[^1].Action.ShouldBe(JournalAction.Closed);
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

    private sealed class RecordingStep(string name, List<string> calls, int failures, bool slow) : ISwitchoverStep
    {
        private int _failed;

        public string Name => name;

        public string Description => name;

        public bool PointOfNoReturn { get; init; }

        /// <summary>How long the step takes when it succeeds.</summary>
        public int Milliseconds { get; init; }

        bool ISwitchoverStep.IsPointOfNoReturn => PointOfNoReturn;

        public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
        {
            calls.Add("do " + name);
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
