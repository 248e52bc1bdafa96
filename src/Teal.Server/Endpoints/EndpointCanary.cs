using Teal.Core.Deployments;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Core.Instances;
using Teal.Core.State;
using Teal.Server.Api;

namespace Teal.Server.Endpoints;

/// <summary>
/// Canary weights of a reader endpoint (<c>teal endpoint canary NAME --green-percent P</c>): before
/// the switchover, P% of new read connections go to green's streaming readers in turn (the canary
/// names green; <see cref="EndpointRouteResolver.CanariesAsync"/> spreads it, and
/// <see cref="ReaderRoutes"/> follows green's readers as they stop and start streaming), the rest
/// keep their route. Connections already open stay where they are. The flip ends the split (the
/// readers of green become the route).
/// </summary>
public sealed class EndpointCanary(IStateStore state, LiveEndpoints live)
{
    public async Task<EndpointView> SetAsync(string name, CanaryRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.GreenPercent is not (>= 0 and <= 100))
        {
            throw new TealException("endpoint.canary-percent-invalid", $"--green-percent must be between 0 and 100, not {request.GreenPercent}", "give the share of new read connections for green's readers, for example 10, then 50, then 100 (0 ends the canary)");
        }

        var spec = await state.GetEndpointAsync(name, cancellationToken)
            ?? throw new TealException("endpoint.not-found", $"no endpoint named '{name}'", "see `teal endpoint list`") { Kind = TealErrorKind.NotFound };
        if (spec.Kind != EndpointKind.Proxy || spec.Role != InstanceRole.Reader)
        {
            throw new TealException("endpoint.canary-not-reader", $"endpoint '{name}' is a {(spec.Kind == EndpointKind.Proxy ? "writer" : spec.Kind.ToString())} endpoint; canary weights split a reader endpoint of Teal's proxy", "declare one with `teal endpoint add NAME --instance BLUE --listen HOST:PORT --role reader`");
        }

        var updated = spec with { CanaryInstance = null, CanaryPercent = 0 };
        if (request.GreenPercent > 0)
        {
            var deployment = (await state.ListDeploymentsAsync(cancellationToken)).FirstOrDefault(d => d.Blue == spec.Instance && !d.Reversed && d.Status is DeploymentStatus.Available or DeploymentStatus.SwitchoverFailed or DeploymentStatus.Provisioning)
                ?? throw new TealException("endpoint.canary-no-green", $"no deployment stages a green for '{spec.Instance}', the instance endpoint '{name}' serves", "create one with `teal create NAME --source INSTANCE --target-readers N`; after a switchover the endpoint already routes to green's readers") { Kind = TealErrorKind.Refused };
            var reader = (await GreenTopology.ReadersOfAsync(state, deployment.Green, cancellationToken)).FirstOrDefault(r => r.Managed is not null && r.ReplicationSlot is not null)
                ?? throw new TealException("endpoint.canary-no-readers", $"green '{deployment.Green}' of deployment '{deployment.Name}' has no readers for a canary", "create the deployment with --target-readers N (green's readers are what the canary sends reads to)") { Kind = TealErrorKind.Refused };
            updated = spec with { CanaryInstance = reader.ReaderOf ?? deployment.Green, CanaryPercent = request.GreenPercent };
        }

        await state.UpdateEndpointAsync(updated, cancellationToken);
        await live.ApplyCanaryAsync(updated, cancellationToken);
        return EndpointView.From(updated, null);
    }
}
