using Teal.Core.Endpoints;
using Teal.Core.Instances;
using Teal.Core.State;
using Teal.Proxy.Endpoints;

namespace Teal.Server.Endpoints;

/// <summary>
/// Where a declared proxy endpoint routes now, from the state store: the one answer the
/// in-process listeners, the <c>teal proxy</c> route table and the switchover's view share.
/// </summary>
public sealed class EndpointRouteResolver(IStateStore state, StateTargetResolver resolver)
{
    /// <summary>
    /// A writer endpoint routes to its instance; a reader endpoint over the streaming readers Teal
    /// made of it (green's, after a switchover; <see cref="ReaderTargets"/>), or to the instance
    /// itself when it has none.
    /// </summary>
    public async Task<IReadOnlyList<EndpointTarget>> RoutesAsync(EndpointSpec spec, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.Role == InstanceRole.Reader && await ReaderTargets.ForAsync(state, spec.Instance, null, cancellationToken) is { Count: > 0 } readers)
        {
            return readers;
        }

        return [await resolver.ResolveAsync(spec.Instance, cancellationToken)];
    }

    /// <summary>
    /// The one route a <c>teal proxy</c> process is given: the first of <see cref="RoutesAsync"/>
    /// (its route table carries one target per endpoint).
    /// </summary>
    public async Task<EndpointTarget> RouteAsync(EndpointSpec spec, CancellationToken cancellationToken) =>
        (await RoutesAsync(spec, cancellationToken))[0];

    /// <summary>
    /// Where the stored canary sends its share, in turn: every streaming reader of green
    /// (<see cref="ReaderTargets"/>, as the route's own readers), so it follows green's readers as
    /// they stop and start streaming; empty when the endpoint splits nothing. A canary stored as
    /// one reader stands for its writer's readers.
    /// </summary>
    public async Task<IReadOnlyList<EndpointTarget>> CanariesAsync(EndpointSpec spec, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.CanaryInstance is not { } name || spec.CanaryPercent <= 0)
        {
            return [];
        }

        var writer = await ReaderTargets.CanaryWriterAsync(state, spec, cancellationToken) ?? name;
        return await ReaderTargets.ForAsync(state, writer, null, cancellationToken) is { Count: > 0 } readers
            ? readers
            : [await resolver.ResolveAsync(name, cancellationToken)];
    }

    /// <summary>The wire protocol of the endpoint: its instance's engine's (MariaDB: MySQL's).</summary>
    public async Task<ProxyProtocol> ProtocolAsync(EndpointSpec spec, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var engine = (await state.GetInstanceAsync(spec.Instance, cancellationToken))?.Engine ?? EngineKind.Postgres;
        return ProxyProtocols.ForEngine(engine);
    }
}
