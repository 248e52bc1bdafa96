using Microsoft.Extensions.Logging;
using Teal.Core.Deployments;
using Teal.Core.Instances;
using Teal.Core.State;

namespace Teal.Core.Endpoints;

/// <summary>
/// Keeps live reader endpoints on the readers that stream: when the monitor sees a reader of a
/// writer stop or start streaming, every reader endpoint of that writer is routed again over
/// <see cref="ReaderTargets"/> (a <c>teal proxy</c> gets the same list from its route table at its
/// next heartbeat), and so is the canary of every reader endpoint whose canary is that writer's
/// readers (green's, before the switchover). Outside switchovers only: a switchover moves the
/// endpoints itself.
/// </summary>
public sealed partial class ReaderRoutes(IStateStore state, IEndpointRegistry endpoints, ILogger<ReaderRoutes> logger)
{
    /// <summary>Whether the readers that stream differ between two rounds of the monitor.</summary>
    public static bool StreamingChanged(IReadOnlyList<ReaderStatus> before, IReadOnlyList<ReaderStatus> now)
    {
        ArgumentNullException.ThrowIfNull(before);
        ArgumentNullException.ThrowIfNull(now);
        static HashSet<string> Streaming(IEnumerable<ReaderStatus> readers) => [.. readers.Where(r => r.State == "streaming").Select(r => r.Name)];
        return !Streaming(before).SetEquals(Streaming(now));
    }

    public async Task RefreshAsync(string writer, CancellationToken cancellationToken)
    {
        if ((await state.ListDeploymentsAsync(cancellationToken)).Any(d => d.Status == DeploymentStatus.SwitchoverInProgress))
        {
            return;
        }

        var readers = await ReaderTargets.StreamingReadersAsync(state, writer, cancellationToken);
        if (readers.Count == 0)
        {
            return;
        }

        foreach (var spec in await state.ListEndpointsAsync(cancellationToken))
        {
            if (spec.Kind != EndpointKind.Proxy || spec.Role != InstanceRole.Reader)
            {
                continue;
            }

            if (spec.Instance != writer)
            {
                await RefreshCanaryAsync(spec, writer, readers, cancellationToken);
                continue;
            }

            if (await endpoints.FindAsync(spec, cancellationToken) is not { } live)
            {
                continue;
            }

            List<EndpointTarget> targets = [.. readers.Select(r => new EndpointTarget(r.Name, r.Host, r.Port, live.Target.Database))];
            if (live.Targets.SequenceEqual(targets))
            {
                continue;
            }

            await live.FlipAsync(targets, cancellationToken);
            LogRerouted(spec.Name, targets.Count);
        }
    }

    private async Task RefreshCanaryAsync(EndpointSpec spec, string writer, IReadOnlyList<Instance> readers, CancellationToken cancellationToken)
    {
        if (await ReaderTargets.CanaryWriterAsync(state, spec, cancellationToken) != writer
            || await endpoints.FindAsync(spec, cancellationToken) is not { } live)
        {
            return;
        }

        // Each reader on its own database, as the canary was first resolved.
        List<EndpointTarget> targets = [.. readers.Select(r => new EndpointTarget(r.Name, r.Host, r.Port, r.Database))];
        if (live.CanaryTargets.SequenceEqual(targets))
        {
            return;
        }

        await live.SetCanaryAsync(targets, spec.CanaryPercent, cancellationToken);
        LogCanaryRerouted(spec.Name, targets.Count);
    }

    [LoggerMessage(EventId = 2251, Level = LogLevel.Information, Message = "Reader endpoint {Name} now sends its canary share over {Readers} streaming reader(s) of green")]
    private partial void LogCanaryRerouted(string name, int readers);

    [LoggerMessage(EventId = 2250, Level = LogLevel.Information, Message = "Reader endpoint {Name} now spreads over {Readers} streaming reader(s)")]
    private partial void LogRerouted(string name, int readers);
}
