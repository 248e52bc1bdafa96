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

    public EndpointTarget Next() => _targets[(int)((ulong)Interlocked.Increment(ref _next) % (ulong)_targets.Length)];
}
