using System.Collections.Concurrent;
using System.Security.Cryptography;
using Teal.Core.Deployments;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Core.Events;
using Teal.Core.Guardrails;
using Teal.Core.Hosting;
using Teal.Core.State;

namespace Teal.Core.Switchover;

/// <summary>A step of the plan as <c>--dry-run</c> and the API show it.</summary>
public sealed record PlannedStep(string Name, string Description, bool PointOfNoReturn);

/// <summary>What a switchover would do, and whether the guardrails let it.</summary>
public sealed record SwitchoverPlanView(string Deployment, int TimeoutSeconds, IReadOnlyList<PlannedStep> Steps, CheckReport Guardrails);

/// <summary>
/// What the API offers on switchovers: check the guardrails, show the plan, start one (it runs
/// in the background; <c>teal show</c> follows its phases), and finish or unwind the ones Teal
/// was running when it stopped.
/// </summary>
public sealed class SwitchoverService(
    DeploymentService deployments,
    DeploymentRecorder recorder,
    DeploymentLinks links,
    IEndpointRegistry endpoints,
    SwitchoverExecutor executor,
    BackgroundWork background,
    IStateStore state)
{
    /// <summary>
    /// How long a request waits for a run that has stored its outcome to let the deployment go:
    /// it only closes the link of the direction it left (after the monitor round using it).
    /// </summary>
    private static readonly TimeSpan EndingRunWait = TimeSpan.FromSeconds(30);

    // Deployments whose background slot runs a switchover (not a request's reservation), with
    // the task that ends when the slot is released.
    private readonly ConcurrentDictionary<DeploymentId, Task> _runs = new();

    /// <summary>The switchover's guardrails (<c>teal check</c>); a switchback's are shown by <c>teal switchback --dry-run</c>.</summary>
    public async Task<CheckReport> CheckAsync(string idOrName, SwitchoverOptions options, CancellationToken cancellationToken)
    {
        var deployment = await deployments.GetAsync(idOrName, cancellationToken);
        return await CheckAsync(deployment, options, switchback: false, cancellationToken);
    }

    private async Task<CheckReport> CheckAsync(Deployment deployment, SwitchoverOptions options, bool switchback, CancellationToken cancellationToken)
    {
        var link = await links.GetAsync(deployment, cancellationToken);
        var routed = await endpoints.ForInstanceAsync(deployment.Production, cancellationToken);
        return await SwitchoverGuardrails.CheckAsync(deployment, link, routed.Count, options, cancellationToken, switchback);
    }

    public async Task<SwitchoverPlanView> DryRunAsync(string idOrName, SwitchoverOptions options, CancellationToken cancellationToken, bool switchback = false)
    {
        var deployment = await deployments.GetAsync(idOrName, cancellationToken);
        var report = await CheckAsync(deployment, options, switchback, cancellationToken);
        return new SwitchoverPlanView(
            deployment.Name,
            (int)options.Timeout.TotalSeconds,
            [.. SwitchoverPlan.Forward().Select(s => new PlannedStep(s.Name, s.Description, s.IsPointOfNoReturn))],
            report);
    }

    /// <summary>
    /// Runs the guardrails and, when all pass, starts the switchover in the background. A
    /// refusal changes nothing. The background slot is taken first: a deployment is
    /// SWITCHOVER_IN_PROGRESS only while something runs it, and of two concurrent requests one
    /// runs and the other is refused (409).
    /// </summary>
    /// <remarks>
    /// With <c>switchback</c>, goes back to the old blue: the same plan, guardrails, journal and
    /// rollback over the deployment's reversed link (green → old blue), allowed while reverse
    /// replication runs.
    /// </remarks>
    public async Task<Deployment> StartAsync(string idOrName, SwitchoverOptions options, CancellationToken cancellationToken, bool switchback = false)
    {
        ArgumentNullException.ThrowIfNull(options);
        var deployment = await deployments.GetAsync(idOrName, cancellationToken);
        await using var slot = await ReserveAsync(deployment, cancellationToken);
        var link = await links.GetAsync(deployment, cancellationToken);
        var routed = await endpoints.ForInstanceAsync(deployment.Production, cancellationToken);
        var report = await SwitchoverGuardrails.CheckAsync(deployment, link, routed.Count, options, cancellationToken, switchback);
        var verb = switchback ? "switchback" : "switchover";
        report.ThrowIfFailed(switchback ? "switchback.refused" : "switchover.refused", $"{verb} refused");

        var switchoverId = (switchback ? "sb-" : "so-") + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));
        var now = recorder.Time.GetUtcNow();
        var started = await recorder.UpdateAsync(
            deployment.Id,
            d => d.Reversed == switchback && d.Reversed == deployment.Reversed && (switchback
                    ? d.Status is DeploymentStatus.SwitchoverCompleted or DeploymentStatus.SwitchoverFailed
                    : d.Status is DeploymentStatus.Available or DeploymentStatus.SwitchoverFailed)
                ? d with
                {
                    Status = DeploymentStatus.SwitchoverInProgress,
                    StatusReason = null,
                    Switchover = new SwitchoverState(switchoverId, now, (int)options.Timeout.TotalSeconds) { Phase = "guardrails" },
                }
                : throw Conflict(d),
            cancellationToken);
        await recorder.EventAsync(
            deployment.Id,
            EventKinds.SwitchoverStarted,
            $"{verb} {switchoverId} started (timeout {options.Timeout.TotalSeconds:0} s, {routed.Count} endpoint(s))",
            cancellationToken,
            new Dictionary<string, string> { ["switchoverId"] = switchoverId });

        var context = Context(started, link, routed, options, switchoverId, now);
        TrackRun(deployment.Id);
        slot.Run(ct => RunAndTurnAsync(context, c => executor.RunAsync(context, SwitchoverPlan.Forward(), c), ct));
        return started;
    }

    /// <summary>
    /// Continues a switchover stopped past its point of no return by a permanent error, once the
    /// operator fixed the cause: from the journal, exactly as a recovery after a crash.
    /// </summary>
    public async Task<Deployment> ResumeAsync(string idOrName, CancellationToken cancellationToken)
    {
        var deployment = await deployments.GetAsync(idOrName, cancellationToken);
        await using var slot = await ReserveAsync(deployment, cancellationToken);
        if (deployment.Status != DeploymentStatus.SwitchoverStopped || deployment.Switchover is not { } switchover)
        {
            throw new TealException(
                "switchover.not-stopped",
                $"deployment '{deployment.Name}' is {SwitchoverGuardrails.Screaming(deployment.Status)}: only a SWITCHOVER_STOPPED switchover can be resumed",
                deployment.Status == DeploymentStatus.SwitchoverInProgress ? "it is running; follow it with `teal show`" : "start a switchover with `teal switchover ID`")
            { Kind = TealErrorKind.Conflict };
        }

        var resumed = await recorder.UpdateAsync(
            deployment.Id,
            d => d.Status == DeploymentStatus.SwitchoverStopped && d.Switchover?.Id == switchover.Id
                ? d with { Status = DeploymentStatus.SwitchoverInProgress, StatusReason = null, Switchover = d.Switchover with { Outcome = SwitchoverOutcome.InProgress, Hint = null } }
                : throw Conflict(d),
            cancellationToken);
        await recorder.EventAsync(deployment.Id, EventKinds.SwitchoverPhase, $"switchover {switchover.Id} resumed at {switchover.Phase}", cancellationToken, new Dictionary<string, string> { ["switchoverId"] = switchover.Id });
        var (context, journal) = await RecoveryContextAsync(resumed, switchover, cancellationToken);
        TrackRun(deployment.Id);
        slot.Run(ct => RunAndTurnAsync(context, c => executor.RecoverAsync(context, SwitchoverPlan.Forward(), journal, c), ct));
        return resumed;
    }

    /// <summary>
    /// <c>teal finish</c>: the operator keeps green. Reverse replication and every object of
    /// Teal's on both sides are removed; the old blue stays fenced until <c>teal instance
    /// unfence</c>. The deployment stays SWITCHOVER_COMPLETED, with replication STOPPED.
    /// </summary>
    public async Task<Deployment> FinishAsync(string idOrName, CancellationToken cancellationToken)
    {
        var listed = await deployments.GetAsync(idOrName, cancellationToken);
        await using var slot = await ReserveAsync(listed, cancellationToken);
        // Read again: a run may have ended while the slot was awaited.
        var deployment = await state.GetDeploymentAsync(listed.Id, cancellationToken) ?? listed;
        if (deployment.Status != DeploymentStatus.SwitchoverCompleted && !(deployment.Reversed && deployment.Status == DeploymentStatus.SwitchoverFailed))
        {
            throw new TealException(
                "finish.not-switched-over",
                $"deployment '{deployment.Name}' is {SwitchoverGuardrails.Screaming(deployment.Status)}: only a completed switchover can be finished",
                deployment.Status == DeploymentStatus.Available ? "switch over first (`teal switchover`), or delete the deployment" : "wait for the switchover to end (`teal show`)")
            { Kind = TealErrorKind.Conflict };
        }

        var link = await links.GetAsync(deployment, cancellationToken);
        if (deployment.Reversed)
        {
            await link.FinishAsync(cancellationToken);
        }
        else
        {
            // No reverse replication: only Teal's heartbeat and DDL capture are left, and the
            // forward link's removal leaves the old blue fenced as well.
            await link.RemoveAsync(cancellationToken);
        }

        var finished = await recorder.UpdateAsync(
            deployment.Id,
            d => d with
            {
                Status = DeploymentStatus.SwitchoverCompleted,
                StatusReason = null,
                Reversed = false,
                Replication = new ReplicationStatus(ReplicationState.Stopped) { Reason = "finished: Teal's replication and objects were removed from both sides", ObservedAt = recorder.Time.GetUtcNow() },
            },
            cancellationToken);
        await links.ForgetAsync(deployment.Id);
        await recorder.EventAsync(
            deployment.Id,
            EventKinds.Finished,
            $"deployment '{deployment.Name}' finished: '{finished.Green}' stays production; '{finished.Blue}' stays fenced until `teal instance unfence {finished.Blue}`",
            cancellationToken,
            new Dictionary<string, string> { ["blue"] = finished.Blue, ["green"] = finished.Green });
        return finished;
    }

    /// <summary>Closes the link of the direction a cutover just left (a switchover or switchback turns the deployment round).</summary>
    private async Task<Deployment> RunAndTurnAsync(SwitchoverContext context, Func<CancellationToken, Task<Deployment>> run, CancellationToken cancellationToken)
    {
        var deployment = await run(cancellationToken);
        if (deployment.Reversed != context.Deployment.Reversed)
        {
            await links.ForgetAsync(deployment.Id, context.Deployment.Reversed);
        }

        return deployment;
    }

    /// <summary>Waits for a running switchover to finish (tests and <c>--wait</c> in-process).</summary>
    public Task WaitAsync(DeploymentId id) => background.WaitAsync(WorkKey(id));

    /// <summary>Finishes or unwinds every switchover Teal was running when it stopped.</summary>
    public async Task RecoverAsync(CancellationToken cancellationToken)
    {
        foreach (var deployment in await state.ListDeploymentsAsync(cancellationToken))
        {
            if (deployment.Status != DeploymentStatus.SwitchoverInProgress || deployment.Switchover is not { } switchover)
            {
                continue;
            }

            var (context, journal) = await RecoveryContextAsync(deployment, switchover, cancellationToken);
            // A request that reserved the slot meanwhile is refused by the status and lets it go.
            while (!background.TryStart(WorkKey(deployment.Id), ct => RunAndTurnAsync(context, c => executor.RecoverAsync(context, SwitchoverPlan.Forward(), journal, c), ct)))
            {
                await background.WaitAsync(WorkKey(deployment.Id)).WaitAsync(cancellationToken);
            }

            TrackRun(deployment.Id);
        }
    }

    /// <summary>
    /// The instances whose endpoints must come up holding new connections: blue of every
    /// switchover left unfinished (in progress, or stopped before its endpoints resumed), so that
    /// no client reaches a fenced side before recovery (or <c>--resume</c>) decides.
    /// </summary>
    public async Task<IReadOnlyList<(string Instance, TimeSpan Hold)>> HeldAtStartAsync(CancellationToken cancellationToken)
    {
        var held = new List<(string, TimeSpan)>();
        foreach (var deployment in await state.ListDeploymentsAsync(cancellationToken))
        {
            if (deployment.Status is not (DeploymentStatus.SwitchoverInProgress or DeploymentStatus.SwitchoverStopped) || deployment.Switchover is not { } switchover)
            {
                continue;
            }

            var journal = (await state.ReadJournalAsync(deployment.Id, cancellationToken)).Where(e => e.SwitchoverId == switchover.Id).OrderBy(e => e.Seq).ToList();
            var resumed = journal.Any(e => e.Step == ResumeStep && e.Action == JournalAction.Completed);
            if (deployment.Status == DeploymentStatus.SwitchoverStopped && resumed)
            {
                continue;
            }

            // Long enough for recovery to decide; past it a held client gets the endpoint's clear error.
            var hold = TimeSpan.FromSeconds(switchover.TimeoutSeconds);
            held.Add((RoutedName(deployment, journal), hold));
        }

        return held;
    }

        public static string WorkKey(DeploymentId id) => $"switchover/{id}";

    private async Task<(SwitchoverContext Context, IReadOnlyList<JournalEntry> Journal)> RecoveryContextAsync(Deployment deployment, SwitchoverState switchover, CancellationToken cancellationToken)
    {
        var journal = await state.ReadJournalAsync(deployment.Id, cancellationToken);
        var link = await links.GetAsync(deployment, cancellationToken);
        var routed = await endpoints.ForInstanceAsync(RoutedName(deployment, journal.Where(e => e.SwitchoverId == switchover.Id).OrderBy(e => e.Seq).ToList()), cancellationToken);
        var options = SwitchoverOptions.Create(switchover.TimeoutSeconds);
        return (Context(deployment, link, routed, options, switchover.Id, switchover.StartedAt), journal);
    }

    /// <summary>The step after which the endpoints no longer hold clients: the plan's end of the write pause.</summary>
    private static readonly string ResumeStep = SwitchoverPlan.Forward().Single(s => s.EndsWritePause).Name;

    /// <summary>Endpoints follow the name blue had when the switchover started (green holds it after the flip).</summary>
    private static string RoutedName(Deployment deployment, List<JournalEntry> journal) =>
        (journal.Count > 0 ? journal[^1].Data.GetValueOrDefault(SwitchoverData.BlueName) : null) ?? deployment.Production;

    private static TealException Conflict(Deployment d) =>
        new("switchover.conflict", $"deployment '{d.Name}' is {SwitchoverGuardrails.Screaming(d.Status)}", "wait for the running switchover to finish (`teal show`)") { Kind = TealErrorKind.Conflict };

    /// <summary>
    /// Takes the deployment's background slot before anything is checked or changed, so that two
    /// requests cannot both pass the status check; released (running nothing) unless
    /// <see cref="Slot.Run"/> hands it the switchover.
    /// </summary>
    /// <remarks>
    /// A run that has stored its outcome still holds the slot while it closes the link of the
    /// direction it left; <c>teal switchover --wait</c> returns on the stored outcome, so the
    /// next verb (<c>teal finish</c>) waits for that moment instead of being refused.
    /// </remarks>
    private async Task<Slot> ReserveAsync(Deployment deployment, CancellationToken cancellationToken)
    {
        var slot = new Slot();
        if (background.TryStart(WorkKey(deployment.Id), slot.WaitAsync))
        {
            return slot;
        }

        if (_runs.TryGetValue(deployment.Id, out var released)
            && await state.GetDeploymentAsync(deployment.Id, cancellationToken) is { Status: not DeploymentStatus.SwitchoverInProgress })
        {
            try
            {
                await released.WaitAsync(EndingRunWait, recorder.Time, cancellationToken);
            }
            catch (TimeoutException)
            {
                // Refused below, as any request that finds the slot taken.
            }
        }

        // Tried again whether or not a run was found: one that ended between the first try and
        // the look-up above has taken its entry with it, and the slot is free now.
        if (background.TryStart(WorkKey(deployment.Id), slot.WaitAsync))
        {
            return slot;
        }

        throw _runs.ContainsKey(deployment.Id)
            ? new TealException(
                "switchover.already-running",
                $"a switchover of '{deployment.Name}' is already running",
                "wait for it to finish; follow it with `teal show " + deployment.Name + " --watch`")
            { Kind = TealErrorKind.Conflict }
            : new TealException(
                "switchover.already-running",
                $"another request on '{deployment.Name}' is already running (a switchover, switchback, resume or finish being started)",
                "try again in a moment; `teal show " + deployment.Name + "` shows what it did")
            { Kind = TealErrorKind.Conflict };
    }

    /// <summary>Marks the deployment's slot as running a switchover until the slot is released.</summary>
    private void TrackRun(DeploymentId id)
    {
        var released = background.WaitAsync(WorkKey(id));
        _runs[id] = released;
        // Removes this run's entry only: a later run of the same deployment has its own task.
        _ = released.ContinueWith(_ => _runs.TryRemove(KeyValuePair.Create(id, released)), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>A reserved background slot: runs the work it is given, or nothing once disposed without it.</summary>
    private sealed class Slot : IAsyncDisposable
    {
        private readonly TaskCompletionSource<Func<CancellationToken, Task>?> _work = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Run(Func<CancellationToken, Task> work) => _work.TrySetResult(work);

        public async Task WaitAsync(CancellationToken cancellationToken)
        {
            if (await _work.Task.WaitAsync(cancellationToken) is { } work)
            {
                await work(cancellationToken);
            }
        }

        public ValueTask DisposeAsync()
        {
            _work.TrySetResult(null);
            return ValueTask.CompletedTask;
        }
    }

    private SwitchoverContext Context(Deployment deployment, Engines.IReplicationLink link, IReadOnlyList<IEndpoint> routed, SwitchoverOptions options, string switchoverId, DateTimeOffset startedAt) =>
        new()
        {
            SwitchoverId = switchoverId,
            Deployment = deployment,
            Current = deployment,
            Link = link,
            Endpoints = routed,
            Options = options,
            State = state,
            Time = recorder.Time,
            Deadline = startedAt + options.Timeout,
        };
}
