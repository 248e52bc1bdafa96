using Teal.Core.Endpoints;
using Teal.Proxy.Sessions;

namespace Teal.Proxy.Endpoints;

/// <summary>
/// Round robin over a reader endpoint's readers: each new connection takes the next one. The
/// list is fixed (a new list comes with a new route, which takes the turn over when its servers
/// are the same); only the counter moves, shared by every connection that reads the route.
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
    /// The rotation over <paramref name="targets"/>, going on from <paramref name="current"/>'s
    /// turn when it has the same servers in the same order (by address: the flip names green's
    /// readers as renamed with green, a route table fetched later may name them otherwise). A
    /// rotation started afresh sends the next connection to the first reader again: ten
    /// connections went 6 and 4 over two readers after such a republish.
    /// </summary>
    public static ReaderRotation Over(IReadOnlyList<EndpointTarget> targets, ReaderRotation? current)
    {
        var next = new ReaderRotation(targets);
        if (current is not null && current._targets.Length == next._targets.Length
            && current._targets.Zip(next._targets).All(p => SessionMover.SameServer(p.First, p.Second)))
        {
            next._next = Interlocked.Read(ref current._next);
        }

        return next;
    }

    public EndpointTarget Next() => _targets[(int)((ulong)Interlocked.Increment(ref _next) % (ulong)_targets.Length)];
}
