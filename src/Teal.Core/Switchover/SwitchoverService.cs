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
    public async Task<CheckReport> CheckAsync(string idOrName, SwitchoverOptions options, CancellationToken cancellationToken)
    {
        var deployment = await deployments.GetAsync(idOrName, cancellationToken);
        var link = await links.GetAsync(deployment, cancellationToken);
        var routed = await endpoints.ForInstanceAsync(deployment.Blue, cancellationToken);
        return await SwitchoverGuardrails.CheckAsync(deployment, link, routed.Count, options, cancellationToken);
    }

    public async Task<SwitchoverPlanView> DryRunAsync(string idOrName, SwitchoverOptions options, CancellationToken cancellationToken)
    {
        var deployment = await deployments.GetAsync(idOrName, cancellationToken);
        var report = await CheckAsync(deployment.Id.ToString(), options, cancellationToken);
        return new SwitchoverPlanView(
            deployment.Name,
            (int)options.Timeout.TotalSeconds,
            [.. SwitchoverPlan.Forward().Select(s => new PlannedStep(s.Name, s.Description, s.IsPointOfNoReturn))],
            report);
    }

    /// <summary>
    /// Runs the guardrails and, when all pass, starts the switchover in the background. A
    /// refusal changes nothing.
    /// </summary>
    public async Task<Deployment> StartAsync(string idOrName, SwitchoverOptions options, CancellationToken cancellationToken)
    {
        var deployment = await deployments.GetAsync(idOrName, cancellationToken);
        var link = await links.GetAsync(deployment, cancellationToken);
        var routed = await endpoints.ForInstanceAsync(deployment.Blue, cancellationToken);
        var report = await SwitchoverGuardrails.CheckAsync(deployment, link, routed.Count, options, cancellationToken);
        report.ThrowIfFailed("switchover.refused", "switchover refused");

        var switchoverId = "so-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6));
        var now = recorder.Time.GetUtcNow();
        var started = await recorder.UpdateAsync(
            deployment.Id,
            d => d.Status is DeploymentStatus.Available or DeploymentStatus.SwitchoverFailed
                ? d with
                {
                    Status = DeploymentStatus.SwitchoverInProgress,
                    StatusReason = null,
                    Switchover = new SwitchoverState(switchoverId, now, (int)options.Timeout.TotalSeconds) { Phase = "guardrails" },
                }
                : throw new TealException("switchover.conflict", $"deployment '{d.Name}' is {SwitchoverGuardrails.Screaming(d.Status)}", "wait for the running switchover to finish") { Kind = TealErrorKind.Conflict },
            cancellationToken);
        await recorder.EventAsync(
            deployment.Id,
            EventKinds.SwitchoverStarted,
            $"switchover {switchoverId} started (timeout {options.Timeout.TotalSeconds:0} s, {routed.Count} endpoint(s))",
            cancellationToken,
            new Dictionary<string, string> { ["switchoverId"] = switchoverId });

        var context = Context(started, link, routed, options, switchoverId, now);
        background.TryStart(WorkKey(deployment.Id), ct => executor.RunAsync(context, SwitchoverPlan.Forward(), ct));
        return started;
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

            var journal = await state.ReadJournalAsync(deployment.Id, cancellationToken);
            var lastData = journal.Where(e => e.SwitchoverId == switchover.Id).OrderBy(e => e.Seq).LastOrDefault()?.Data;
            // Endpoints follow the name blue had when the switchover started (green holds it after the flip).
            var routedName = lastData?.GetValueOrDefault(SwitchoverData.BlueName) ?? deployment.Blue;
            var link = await links.GetAsync(deployment, cancellationToken);
            var routed = await endpoints.ForInstanceAsync(routedName, cancellationToken);
            var options = SwitchoverOptions.Create(switchover.TimeoutSeconds);
            var context = Context(deployment, link, routed, options, switchover.Id, switchover.StartedAt);
            background.TryStart(WorkKey(deployment.Id), ct => executor.RecoverAsync(context, SwitchoverPlan.Forward(), journal, ct));
        }
    }

    public static string WorkKey(DeploymentId id) => $"switchover/{id}";

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
