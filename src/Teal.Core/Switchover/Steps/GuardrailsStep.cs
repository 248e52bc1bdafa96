namespace Teal.Core.Switchover.Steps;

/// <summary>Step 1: every guardrail again, right before clients are paused (the world may have changed since the request).</summary>
public sealed class GuardrailsStep : ISwitchoverStep
{
    public bool NothingToUndo => true;

    public string Name => "guardrails";

    public string Description => "run every guardrail; any failure refuses and changes nothing";

    public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        // The deployment is SWITCHOVER_IN_PROGRESS because of this very switchover, which was
        // accepted from AVAILABLE (or SWITCHOVER_FAILED; a switchback from SWITCHOVER_COMPLETED):
        // judge the rest as of that status.
        var accepted = context.Current with { Status = context.IsSwitchback ? Deployments.DeploymentStatus.SwitchoverCompleted : Deployments.DeploymentStatus.Available };
        var report = await SwitchoverGuardrails.CheckAsync(accepted, context.Link, context.Endpoints.Count, context.Options, cancellationToken, context.IsSwitchback);
        report.ThrowIfFailed("switchover.guardrail-failed", "switchover refused");
    }
}
