namespace Teal.Server.ProxyHost;

/// <summary>What <c>teal proxy</c> was started with.</summary>
/// <param name="Servers">The control plane's API (<c>teal serve</c>): one, or the leader and standbys on a shared state store, tried in order.</param>
/// <param name="Token">The control plane's token: presented on every call to it, and required of every command it sends.</param>
/// <param name="Name">This proxy's name among the control plane's proxies.</param>
/// <param name="AdminListen">HOST:PORT of the admin API the control plane drives (port 0: a free one).</param>
/// <param name="StateFile">Where the last route table is kept (no secret in it), to serve across a restart without the control plane.</param>
public sealed record ProxyProcessOptions(IReadOnlyList<Uri> Servers, string Token, string Name, string AdminListen, string StateFile)
{
    /// <summary>Directory of the certificate shown to TLS clients (generated there at first start unless it exists).</summary>
    public required string CertificateDirectory { get; init; }

    /// <summary>Listen addresses that replace the declared ones on this proxy (endpoint name → HOST:PORT).</summary>
    public IReadOnlyDictionary<string, string> ListenOverrides { get; init; } = new Dictionary<string, string>();

    /// <summary>How often the proxy reports to the control plane and reads its routes.</summary>
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>After SIGTERM: how long established sessions may run on before the rest are cut and the process exits.</summary>
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromMinutes(10);

    /// <summary>
    /// How long an endpoint that was held when the proxy stopped (a switchover under way) holds
    /// new connections after a restart, until the control plane says where they go.
    /// </summary>
    public TimeSpan HoldAtStart { get; init; } = TimeSpan.FromSeconds(60);
}
