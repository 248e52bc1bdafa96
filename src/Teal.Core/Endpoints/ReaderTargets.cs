using Teal.Core.Deployments;
using Teal.Core.Instances;
using Teal.Core.State;

namespace Teal.Core.Endpoints;

/// <summary>
/// Where a reader endpoint spreads new connections: every reader Teal made of its instance that
/// is streaming (green's, after a switchover), in name order; the instance itself when it has
/// none. A reader the monitor last saw not streaming is left out, unless none is streaming (then
/// all are kept: refusing every read is worse than a reader that may be behind).
/// </summary>
public static class ReaderTargets
{
    public static async Task<IReadOnlyList<Instance>> StreamingReadersAsync(IStateStore state, string writer, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(state);
        var readers = (await GreenTopology.ReadersOfAsync(state, writer, cancellationToken)).Where(r => r.Managed is not null && r.ReplicationSlot is not null).ToList();
        if (readers.Count < 2)
        {
            return readers;
        }

        // Only deployments the monitor still watches have current reader figures; a finished one's are history.
        var seen = (await state.ListDeploymentsAsync(cancellationToken))
            .Where(ReplicationMonitor.IsWatched)
            .SelectMany(d => d.Readers)
            .GroupBy(r => r.Name, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => g.Last().State, StringComparer.Ordinal);
        var streaming = readers.Where(r => !seen.TryGetValue(r.Name, out var s) || s == "streaming").ToList();
        return streaming.Count > 0 ? streaming : readers;
    }

    /// <summary>
    /// The writer whose readers take an endpoint's canary (green), or null without a canary. The
    /// canary names green; one stored as a reader stands for that reader's writer.
    /// </summary>
    public static async Task<string?> CanaryWriterAsync(IStateStore state, EndpointSpec spec, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.CanaryInstance is not { } name || spec.CanaryPercent <= 0)
        {
            return null;
        }

        return (await state.GetInstanceAsync(name, cancellationToken))?.ReaderOf ?? name;
    }

    /// <summary>The endpoint targets of <see cref="StreamingReadersAsync"/>, on <paramref name="database"/> (null: each reader's own).</summary>
    public static async Task<IReadOnlyList<EndpointTarget>> ForAsync(IStateStore state, string writer, string? database, CancellationToken cancellationToken) =>
        [.. (await StreamingReadersAsync(state, writer, cancellationToken)).Select(r => new EndpointTarget(r.Name, r.Host, r.Port, database ?? r.Database))];
}
