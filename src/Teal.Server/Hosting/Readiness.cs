namespace Teal.Server.Hosting;

/// <summary>
/// Whether <c>teal serve</c> has bound its endpoints since it started (<c>GET /readyz</c>). The
/// API answers at once, before <see cref="StartupWork"/> has started the listeners: a service
/// manager or load balancer that took <c>/healthz</c> for "clients can connect" would send
/// them to a port nobody listens on yet after a restart.
/// </summary>
public sealed class Readiness
{
    // Set once the endpoints this server serves listen (holding clients, if a switchover is being recovered).
    private volatile bool _endpointsBound;

    internal void EndpointsStarted() => _endpointsBound = true;

    /// <summary>
    /// Ready when its endpoints listen, or as a standby: a standby binds none and serves reads,
    /// which is all it is for until it leads.
    /// </summary>
    public bool IsReady(Leadership leadership) => _endpointsBound || (leadership.Shared && !leadership.IsLeader);
}
