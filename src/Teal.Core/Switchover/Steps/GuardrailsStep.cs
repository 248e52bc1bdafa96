namespace Teal.Core.Switchover.Steps;

/// <summary>Step 1: every guardrail again, right before clients are paused (the world may have changed since the request).</summary>
public sealed class GuardrailsStep : ISwitchoverStep
{
    public string Name => "guardrails";

    public string Description => "run every guardrail; any failure refuses and changes nothing";

    public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        var report = await SwitchoverGuardrails.CheckAsync(context.Current, context.Link, context.Endpoints.Count, context.Options, cancellationToken);
        report.ThrowIfFailed("switchover.guardrail-failed", "switchover refused");
    }
}
