using Teal.Core.Endpoints;
using Teal.Core.State;
using Teal.Proxy.Hosting;

namespace Teal.Server.Endpoints;

/// <summary>
/// The switchover's view of every endpoint kind: the proxy's listeners and the PgBouncers Teal
/// drives. Endpoints are found one way, from their declarations: each declaration routed to
/// the instance is asked of what serves its kind.
/// </summary>
public sealed class EndpointRegistry(IStateStore state, ProxyManager proxies, PgBouncerEndpoints pgBouncers) : IEndpointRegistry
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
            EndpointKind.Proxy => proxies.Get(spec.Name),
            EndpointKind.PgBouncer => await pgBouncers.DriverAsync(spec, cancellationToken),
            _ => null,
        };
    }
}
