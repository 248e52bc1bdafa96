using Teal.Core.Endpoints;

namespace Teal.Proxy.Endpoints;

/// <summary>
/// Round robin over a reader endpoint's readers: each new connection takes the next one. The
/// list is fixed (a new list comes with a new route); only the counter moves, shared by every
/// connection that reads the route.
/// </summary>
internal sealed class ReaderRotation
{
    private readonly EndpointTarget[] _targets;
    private long _next = -1;

    public ReaderRotation(IReadOnlyList<EndpointTarget> targets)
    {
        ArgumentNullException.ThrowIfNull(targets);
        ArgumentOutOfRangeException.ThrowIfZero(targets.Count);
        _targets = [.. targets];
    }

    public IReadOnlyList<EndpointTarget> Targets => _targets;

    /// <summary>
    /// The rotation over <paramref name="targets"/>: <paramref name="current"/> when it has the
    /// same readers in the same order, so its turn goes on — the route is published again, unchanged,
    /// at every heartbeat, and a new rotation would send the next connection to the first reader
    /// again (ten connections spread 6 and 4 over two readers) — else a new one.
    /// </summary>
    public static ReaderRotation Over(IReadOnlyList<EndpointTarget> targets, ReaderRotation? current) =>
        current is not null && current._targets.SequenceEqual(targets) ? current : new ReaderRotation(targets);

    public EndpointTarget Next() => _targets[(int)((ulong)Interlocked.Increment(ref _next) % (ulong)_targets.Length)];
}
