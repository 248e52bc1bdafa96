using Microsoft.Extensions.Logging;
using Teal.Core.Endpoints;
using Teal.Core.State;
using Teal.Proxy.Hosting;
using Teal.Server.RemoteProxies;

namespace Teal.Server.Endpoints;

/// <summary>
/// The switchover's view of every endpoint kind: the proxy's listeners and the PgBouncers Teal
/// drives. Endpoints are found one way, from their declarations: each declaration routed to
/// the instance is asked of what serves its kind. A proxy endpoint served by <c>teal proxy</c>
/// processes (besides or instead of this server's listener) is one <see cref="ProxyFleetEndpoint"/>
/// that drives all of them.
/// </summary>
public sealed class EndpointRegistry(IStateStore state, ProxyManager proxies, PgBouncerEndpoints pgBouncers, RemoteProxyRegistry remotes, EndpointRouteResolver routes, ILogger<ProxyFleetEndpoint> fleetLogger) : IEndpointRegistry
{
    public async Task<IReadOnlyList<IEndpoint>> ForInstanceAsync(string instance, CancellationToken cancellationToken)
    {
        var found = new List<IEndpoint>();
        foreach (var spec in await state.ListEndpointsAsync(cancellationToken))
        {
            if (spec.Instance == instance && await FindAsync(spec, cancellationToken) is { } live)
            {
                found.Add(live);
            }
        }

        return found;
    }

    public async Task<IEndpoint?> FindAsync(EndpointSpec spec, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        return spec.Kind switch
        {
            EndpointKind.Proxy => await ProxyAsync(spec, cancellationToken),
            EndpointKind.PgBouncer => await pgBouncers.DriverAsync(spec, cancellationToken),
            _ => null,
        };
    }

    private async Task<IEndpoint?> ProxyAsync(EndpointSpec spec, CancellationToken cancellationToken)
    {
        var local = proxies.Get(spec.Name);
        var registered = remotes.All;
        if (registered.Count == 0)
        {
            return local;
        }

        var target = local?.Target ?? await routes.RouteAsync(spec, cancellationToken);
        return new ProxyFleetEndpoint(spec, target, local, registered, remotes, fleetLogger);
    }
}
