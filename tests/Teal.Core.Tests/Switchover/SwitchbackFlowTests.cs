using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Teal.Core.Deployments;
using Teal.Core.Errors;
using Teal.Core.Instances;
using Teal.Core.Switchover;
using Teal.Core.Switchover.Steps;
using Teal.Core.Tests.Switchover.Support;

namespace Teal.Core.Tests.Switchover;

/// <summary>
/// The direction of a cutover as the executor and the real flip leave the deployment: a
/// switchover with reverse replication turns it round (reversed, REVERSE_REPLICATING, the old
/// blue renamed), a switchback turns it back (AVAILABLE, the names given back), and without
/// reverse replication a switchover ends as before. The engine's part runs in the end-to-end tests.
/// </summary>
public sealed class SwitchbackFlowTests
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));
    private readonly InMemoryStateStore _state;

    public SwitchbackFlowTests()
    {
        _state = new InMemoryStateStore(_time);
    }

    [Fact]
    public async Task SwitchoverThenSwitchback_WithReverseReplication_TurnsTheDeploymentRoundAndBack()
    {
        var deployment = await StoreAsync(reverse: true);

        var switched = await RunAsync(deployment);

        switched.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted);
        switched.Reversed.ShouldBeTrue();
        switched.Replication.State.ShouldBe(ReplicationState.ReverseReplicating);
        (switched.Blue, switched.Green, switched.Production, switched.Standby).ShouldBe(("app-old1", "app", "app", "app-old1"));
        switched.GreenNameBeforeSwitchover.ShouldBe("app-green-abc123");

        var back = await RunAsync(switched with { Status = DeploymentStatus.SwitchoverInProgress });

        back.Status.ShouldBe(DeploymentStatus.Available);
        back.Reversed.ShouldBeFalse();
        back.Replication.State.ShouldBe(ReplicationState.Replicating);
        (back.Blue, back.Green).ShouldBe(("app", "app-green-abc123"));
        (await _state.ListInstancesAsync(CancellationToken.None)).Select(i => (i.Name, i.Port)).OrderBy(i => i.Port).ShouldBe([("app", 5432), ("app-green-abc123", 5433)]);

        // And round again: the same names as the first time.
        var again = await RunAsync(back with { Status = DeploymentStatus.SwitchoverInProgress });
        (again.Blue, again.Green, again.Reversed).ShouldBe(("app-old1", "app", true));
    }

    [Fact]
    public async Task Switchover_WithoutReverseReplication_StopsReplicationAndStaysForward()
    {
        var deployment = await StoreAsync(reverse: false);

        var switched = await RunAsync(deployment);

        switched.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted);
        switched.Reversed.ShouldBeFalse();
        switched.Replication.State.ShouldBe(ReplicationState.Stopped);
        (switched.Blue, switched.Green).ShouldBe(("app-old1", "app"));
    }

    [Fact]
    public async Task Guardrails_DirectionMustMatchTheDeployment()
    {
        var forward = Deployment(reverse: true) with { Status = DeploymentStatus.SwitchoverCompleted, Reversed = true };
        var refused = await SwitchoverGuardrails.CheckAsync(forward, new UnusedLink(), 1, new SwitchoverOptions(), CancellationToken.None);
        refused.Results.Single(r => r.Name == "deployment-available").Passed.ShouldBeFalse();
        refused.Results.Single(r => r.Name == "deployment-available").Hint!.ShouldContain("teal switchback upgrade");

        var notReversed = Deployment(reverse: false) with { Status = DeploymentStatus.SwitchoverCompleted };
        var noWayBack = await SwitchoverGuardrails.CheckAsync(notReversed, new UnusedLink(), 1, new SwitchoverOptions(), CancellationToken.None, switchback: true);
        noWayBack.Results.Single(r => r.Name == "deployment-available").Message.ShouldContain("without reverse replication");
    }

    /// <summary>
    /// The real flip after a step that stands in for the engine: prepare-reverse-replication's
    /// slot (a position when reverse replication is on).
    /// </summary>
    private async Task<Deployment> RunAsync(Deployment deployment)
    {
        var context = new SwitchoverContext
        {
            SwitchoverId = "so-" + Guid.NewGuid().ToString("N")[..8],
            Deployment = deployment,
            Current = deployment,
            Link = new UnusedLink(),
            Endpoints = [],
            Options = new SwitchoverOptions(),
            State = _state,
            Time = _time,
            Deadline = _time.GetUtcNow() + TimeSpan.FromMinutes(5),
        };
        List<ISwitchoverStep> plan = [new SlotStep(), new FlipStep()];
        var executor = new SwitchoverExecutor(_state, [], TransientErrors.Neutral, NullLogger<SwitchoverExecutor>.Instance);
        return await executor.RunAsync(context, plan, CancellationToken.None);
    }

    private async Task<Deployment> StoreAsync(bool reverse)
    {
        foreach (var (name, port) in new[] { ("app", 5432), ("app-green-abc123", 5433) })
        {
            await _state.AddInstanceAsync(new Instance(name, EngineKind.Postgres) { Version = "15.8", Host = "127.0.0.1", Port = port, User = "postgres", Database = "app" }, CancellationToken.None);
        }

        var deployment = Deployment(reverse);
        await _state.AddDeploymentAsync(deployment, CancellationToken.None);
        return deployment;
    }

    private Deployment Deployment(bool reverse) =>
        new(DeploymentId.New(), "upgrade", DeploymentStatus.SwitchoverInProgress)
        {
            Blue = "app",
            Green = "app-green-abc123",
            Database = "app",
            ReverseReplication = reverse,
            Switchover = new SwitchoverState("so-test", _time.GetUtcNow(), 300) { Phase = "guardrails" },
        };

    /// <summary>Stands in for prepare-reverse-replication: a slot (and its position) only when the cutover starts reverse replication.</summary>
    private sealed class SlotStep : ISwitchoverStep
    {
        public bool NothingToUndo => true;

        public string Name => "prepare-reverse-replication";

        public string Description => "slot";

        public Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
        {
            context.ReverseStartPosition = context.StartsReverseReplication ? "0/1000" : null;
            return Task.CompletedTask;
        }
    }
}
