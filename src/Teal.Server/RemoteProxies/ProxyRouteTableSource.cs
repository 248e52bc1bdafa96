using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Core.State;
using Teal.Core.Switchover;
using Teal.Server.Endpoints;

namespace Teal.Server.RemoteProxies;

/// <summary>
/// The route table a <c>teal proxy</c> follows: every declared proxy endpoint with the route the
/// in-process listener would have (a reader endpoint's every streaming reader), and whether a
/// switchover holds it.
/// </summary>
public sealed class ProxyRouteTableSource(IStateStore state, EndpointRouteResolver routes, SwitchoverService switchovers, TimeProvider time)
{
    public async Task<ProxyRouteTable> ReadAsync(CancellationToken cancellationToken)
    {
        var held = (await switchovers.HeldAtStartAsync(cancellationToken)).Select(h => h.Instance).ToHashSet(StringComparer.Ordinal);
        var entries = new List<ProxyRouteEntry>();
        foreach (var spec in await state.ListEndpointsAsync(cancellationToken))
        {
            if (spec.Kind != EndpointKind.Proxy)
            {
                continue;
            }

            try
            {
                var targets = await routes.RoutesAsync(spec, cancellationToken);
                var canaries = await routes.CanariesAsync(spec, cancellationToken);
                entries.Add(new ProxyRouteEntry(spec, targets[0], await routes.ProtocolAsync(spec, cancellationToken), canaries.Count > 0 ? canaries[0] : null, canaries.Count == 0 ? 0 : spec.CanaryPercent, held.Contains(spec.Instance))
                {
                    Readers = targets.Count > 1 ? targets : null,
                    Canaries = canaries.Count > 1 ? canaries : null,
                });
            }
            catch (TealException)
            {
                // An endpoint whose instance is gone has no route; the in-process listener skips it too.
            }
        }

        return new ProxyRouteTable(entries) { At = time.GetUtcNow() };
    }
}
