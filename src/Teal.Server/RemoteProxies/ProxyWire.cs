using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;

namespace Teal.Server.RemoteProxies;

/// <summary>
/// What a <c>teal proxy</c> sends the control plane every heartbeat: who it is, where its admin
/// API answers, and the figures of the endpoints it serves.
/// </summary>
/// <param name="Name">Unique among the proxies of one control plane (<c>--name</c>).</param>
/// <param name="AdminUrl">Its admin API (<c>http://HOST:PORT</c>), which the switchover calls.</param>
public sealed record ProxyHeartbeat(string Name, Uri AdminUrl)
{
    public IReadOnlyList<ProxyEndpointState> Endpoints { get; init; } = [];

    /// <summary>Set once the proxy was told to stop (SIGTERM): it accepts no new client, its sessions run on.</summary>
    public bool Draining { get; init; }
}

/// <summary>One endpoint as a proxy serves it right now.</summary>
public sealed record ProxyEndpointState(string Name, EndpointTarget Target, bool Paused, bool Accepting, EndpointStats Stats);

/// <summary>
/// Every proxy endpoint the control plane declares, with the route it has now: the answer to a
/// heartbeat, and what a proxy keeps in its route file to serve without the control plane.
/// Holds no secret.
/// </summary>
public sealed record ProxyRouteTable(IReadOnlyList<ProxyRouteEntry> Endpoints)
{
    public DateTimeOffset At { get; init; }
}

/// <summary>
/// A declared endpoint and its route. <paramref name="Held"/>: a switchover of its instance is
/// under way (or left unfinished), so a proxy that is not paused must not be resumed by this table.
/// </summary>
public sealed record ProxyRouteEntry(EndpointSpec Spec, EndpointTarget Target, ProxyProtocol Protocol, EndpointTarget? Canary, int CanaryPercent, bool Held)
{
    /// <summary>A reader endpoint's streaming readers, when it has several (<see cref="Target"/> is the first): new connections take them in turn.</summary>
    public IReadOnlyList<EndpointTarget>? Readers { get; init; }

    /// <summary>Where new connections go, in turn.</summary>
    public IReadOnlyList<EndpointTarget> Targets => Readers is { Count: > 1 } readers ? readers : [Target];

    /// <summary>The canary's servers when there are several (green's streaming readers; <see cref="Canary"/> is the first): its share takes them in turn.</summary>
    public IReadOnlyList<EndpointTarget>? Canaries { get; init; }

    /// <summary>Where the canary's share goes, in turn (empty: no canary).</summary>
    public IReadOnlyList<EndpointTarget> CanaryTargets => Canaries is { Count: > 1 } canaries ? canaries : Canary is null ? [] : [Canary];
}

/// <summary>Admin API bodies (control plane → proxy).</summary>
public sealed record ProxyHoldRequest(double HoldSeconds);

/// <summary>
/// A drain; with <see cref="HoldSeconds"/>, the proxy pauses the endpoint first (one round trip
/// for both: the switchover's pause reaches a <c>teal proxy</c> with its drain).
/// </summary>
public sealed record ProxyDrainRequest(double BudgetSeconds)
{
    public double? HoldSeconds { get; init; }
}

/// <summary>
/// A resume; with <see cref="Target"/>, the proxy flips to it first (one round trip for both: the
/// switchover's flip reaches a paused <c>teal proxy</c> with the resume).
/// </summary>
public sealed record ProxyResumeRequest
{
    public EndpointTarget? Target { get; init; }

    /// <summary>A reader endpoint's readers, taken in turn (<see cref="Target"/> is the first); null for one target.</summary>
    public IReadOnlyList<EndpointTarget>? Targets { get; init; }
}

/// <summary>
/// Green's logins are back, and the resume of this switchover is to route to <see cref="Target"/>:
/// the sessions the proxy moves log in there now and are held until the resume, which still
/// decides where they go (one that routes elsewhere drops those logins).
/// </summary>
public sealed record ProxyLoginsOpenRequest(EndpointTarget Target);

/// <summary>
/// Before the pause: the sessions whose client is at work log in on <see cref="Target"/> through
/// its local <see cref="Socket"/> (peer authentication of Teal's OS user, admitted while green is
/// still fenced), for the move at the drain to take. Only a proxy on green's machine, running as
/// Teal's OS user, gets in; any other logs its sessions in once green opens, as before.
/// </summary>
public sealed record ProxyLogInBeforePauseRequest(EndpointTarget Target, string Socket);

public sealed record ProxyFlipRequest(EndpointTarget Target)
{
    /// <summary>A reader endpoint's readers, taken in turn (<see cref="Target"/> is the first); null for one target.</summary>
    public IReadOnlyList<EndpointTarget>? Targets { get; init; }
}

/// <summary>A proxy asks for a role's SCRAM verifier on the instance a session logs in to.</summary>
public sealed record ProxyVerifierRequest(EndpointTarget Target, string Role);

public sealed record ProxyVerifierResponse(string? Verifier);

/// <summary>A registered proxy as <c>GET /api/proxies</c> shows it.</summary>
public sealed record RemoteProxyView(string Name, Uri AdminUrl, DateTimeOffset LastSeen, bool Draining, IReadOnlyList<ProxyEndpointState> Endpoints);
