using Microsoft.Extensions.Logging;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Core.State;
using Teal.Core.Switchover;
using Teal.Proxy.Hosting;

namespace Teal.Server.Endpoints;

/// <summary>Where an endpoint sends connections: the instance's address as the state store has it now.</summary>
public sealed class StateTargetResolver(IStateStore state) : IEndpointTargetResolver
{
    public async Task<EndpointTarget> ResolveAsync(string instance, CancellationToken cancellationToken)
    {
        var found = await state.GetInstanceAsync(instance, cancellationToken)
            ?? throw new TealException("instance.not-found", $"no instance named '{instance}'", "see `teal instance list`") { Kind = TealErrorKind.NotFound };
        return new EndpointTarget(found.Name, found.Host, found.Port, found.Database);
    }
}

/// <summary>
/// Keeps the proxy's listeners in step with the declared endpoints: all of them when Teal
/// starts, one at a time as they are added or removed. PgBouncer endpoints have nothing to
/// listen on; they are driven at switchover only.
/// </summary>
public sealed partial class LiveEndpoints(ProxyManager proxy, PgBouncerEndpoints pgBouncers, EndpointRouteResolver routes, IStateStore state, SwitchoverService switchovers, TealServerOptions options, ILogger<LiveEndpoints> logger) : IEndpointHost
{
    /// <summary>
    /// False with <c>teal serve --endpoints external</c>: the declared proxy endpoints are served
    /// by <c>teal proxy</c> processes, and this server binds none of them.
    /// </summary>
    public bool ServesProxyEndpoints => !options.ExternalEndpoints;

    public Task StartAsync(EndpointSpec spec, CancellationToken cancellationToken) => StartAsync(spec, null, cancellationToken);

    private async Task StartAsync(EndpointSpec spec, TimeSpan? holdDeadline, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.Kind != EndpointKind.Proxy)
        {
            return;
        }

        var targets = await routes.RoutesAsync(spec, cancellationToken);
        var target = targets[0];
        if (!ServesProxyEndpoints)
        {
            // Checked all the same: a declaration whose route does not resolve is refused as in-process.
            return;
        }

        // The endpoint speaks its instance's protocol (MariaDB: MySQL's); resolved just above, so the instance exists.
        // The canary is applied below over every streaming reader of green, not resolved by the proxy as one instance.
        await proxy.StartAsync(spec with { CanaryInstance = null, CanaryPercent = 0 }, target, cancellationToken, holdDeadline, await routes.ProtocolAsync(spec, cancellationToken));
        if (targets.Count > 1 && proxy.Get(spec.Name) is { } started)
        {
            await started.FlipAsync(targets, cancellationToken);
        }

        if (spec.CanaryInstance is not null)
        {
            await ApplyCanaryAsync(spec, cancellationToken);
        }

        LogListening(spec.Name, spec.Listen, target);
        if (holdDeadline is not null)
        {
            LogHolding(spec.Name);
        }
    }

    /// <summary>Applies a stored canary to the live endpoint (null canary: no split).</summary>
    public async Task ApplyCanaryAsync(EndpointSpec spec, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (proxy.Get(spec.Name) is not { } endpoint)
        {
            return;
        }

        var canaries = await routes.CanariesAsync(spec, cancellationToken);
        await endpoint.SetCanaryAsync(canaries, canaries.Count == 0 ? 0 : spec.CanaryPercent, cancellationToken);
    }

    /// <summary>Stops a removed endpoint's listener, or forgets its PgBouncer driver (a new one reads the new declaration).</summary>
    public async Task StopAsync(string name)
    {
        await proxy.StopAsync(name);
        await pgBouncers.ForgetAsync(name);
    }

    /// <summary>
    /// Starts every declared proxy endpoint; one that cannot listen is logged, the others still
    /// start. Those routed to blue of a switchover left unfinished start holding new connections:
    /// recovery decides where they go before anyone is let through.
    /// </summary>
    public async Task StartAllAsync(CancellationToken cancellationToken)
    {
        var held = await switchovers.HeldAtStartAsync(cancellationToken);
        foreach (var spec in await state.ListEndpointsAsync(cancellationToken))
        {
            try
            {
                var hold = held.Where(h => h.Instance == spec.Instance).Select(h => (TimeSpan?)h.Hold).FirstOrDefault();
                await StartAsync(spec, hold, cancellationToken);
            }
            catch (TealException ex)
            {
                LogStartFailed(spec.Name, ex.Message);
            }
        }
    }

    [LoggerMessage(EventId = 2200, Level = LogLevel.Information, Message = "Endpoint {Name} listens on {Listen} -> {Target}")]
    private partial void LogListening(string name, string? listen, EndpointTarget target);

    [LoggerMessage(EventId = 2202, Level = LogLevel.Warning, Message = "Endpoint {Name} holds new connections until the interrupted switchover is recovered")]
    private partial void LogHolding(string name);

    [LoggerMessage(EventId = 2201, Level = LogLevel.Warning, Message = "Endpoint {Name} did not start: {Reason}")]
    private partial void LogStartFailed(string name, string reason);
}
