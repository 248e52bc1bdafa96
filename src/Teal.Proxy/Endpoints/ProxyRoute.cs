using Teal.Core.Endpoints;

namespace Teal.Proxy.Endpoints;

/// <summary>
/// Where an endpoint sends new connections. Immutable: the endpoint swaps the whole route, so a
/// connection reads one consistent target and canary however a flip races with it. The canary is
/// green's streaming readers, which take its share in turn as <see cref="Readers"/> take the rest.
/// </summary>
internal sealed record ProxyRoute(EndpointTarget Target, ReaderRotation? Canary, int CanaryPercent)
{
    /// <summary>A reader endpoint's readers when it has several (<see cref="Target"/> is the first): connections not sent to the canary take them in turn.</summary>
    public ReaderRotation? Readers { get; init; }

    /// <summary>
    /// The target of the <paramref name="sequence"/>-th connection. Deterministic rather than random:
    /// of any 100 consecutive connections exactly <see cref="CanaryPercent"/> go to the canary's readers
    /// (n·p mod 100 falls below p for exactly p values of n in a period of 100).
    /// </summary>
    public EndpointTarget Pick(long sequence) =>
        Canary is not null && CanaryPercent > 0 && (sequence * CanaryPercent % 100) < CanaryPercent ? Canary.Next() : Next();

    /// <summary>The next of the readers, or the one target.</summary>
    public EndpointTarget Next() => Readers?.Next() ?? Target;
}
