using Microsoft.Extensions.Logging;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Core.State;
using Teal.Proxy.Hosting;

namespace Teal.Server.Endpoints;

/// <summary>
/// The endpoints <c>teal serve</c> runs or drives, built from their declarations: Teal's proxy
/// listeners (started here, routed by instance name) and PgBouncers (driven through their
/// console). Answers the switchover's "which endpoints route to this instance?".
/// </summary>
public sealed partial class LiveEndpoints(IStateStore state, ProxyManager proxies, PgBouncerEndpoints pgBouncers, ILogger<LiveEndpoints> logger) : IEndpointRegistry, IEndpointTargetResolver
{
    /// <summary>
    /// Starts a listener for every declared proxy endpoint (at <c>teal serve</c> start). One that
    /// cannot listen (its port taken meanwhile) is logged; the others still start.
    /// </summary>
    public async Task StartAllAsync(CancellationToken cancellationToken)
    {
        foreach (var spec in await state.ListEndpointsAsync(cancellationToken))
        {
            try
            {
                await StartAsync(spec, cancellationToken);
            }
            catch (TealException ex)
            {
                LogStartFailed(spec.Name, ex.Message);
            }
        }
    }

    /// <summary>Starts serving one declared endpoint (a no-op for PgBouncer: it runs on its own).</summary>
    public async Task StartAsync(EndpointSpec spec, CancellationToken cancellationToken)
    {
        if (spec.Kind == EndpointKind.Proxy && proxies.Get(spec.Name) is null)
        {
            await proxies.StartAsync(spec, await ResolveAsync(spec.Instance, cancellationToken), cancellationToken);
        }
    }

    /// <summary>Stops serving a removed endpoint (its listener, or its PgBouncer driver).</summary>
    public async Task StopAsync(string name)
    {
        await proxies.StopAsync(name);
        await pgBouncers.ForgetAsync(name);
    }

    public async Task<IReadOnlyList<IEndpoint>> ForInstanceAsync(string instance, CancellationToken cancellationToken)
    {
        var proxied = await proxies.ForInstanceAsync(instance, cancellationToken);
        var driven = await pgBouncers.ForInstanceAsync(instance, cancellationToken);
        return [.. proxied, .. driven];
    }

    public async Task<EndpointTarget> ResolveAsync(string instance, CancellationToken cancellationToken)
    {
        var found = await state.GetInstanceAsync(instance, cancellationToken)
            ?? throw new TealException("instance.not-found", $"endpoint routes to instance '{instance}', which is not registered", "see `teal instance list`") { Kind = TealErrorKind.NotFound };
        return new EndpointTarget(found.Name, found.Host, found.Port, found.Database);
    }

    [LoggerMessage(EventId = 2201, Level = LogLevel.Warning, Message = "Endpoint {Name} did not start: {Reason}")]
    private partial void LogStartFailed(string name, string reason);
}
