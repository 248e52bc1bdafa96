using Teal.Core.Instances;

namespace Teal.Core.Endpoints;

/// <summary>Declare an endpoint: a proxy listener (<see cref="Listen"/>) or a PgBouncer Teal drives.</summary>
public sealed record AddEndpointRequest(string Name, string Instance)
{
    public EndpointKind Kind { get; init; } = EndpointKind.Proxy;

    public string? Listen { get; init; }

    public InstanceRole Role { get; init; } = InstanceRole.Writer;

    public PgBouncerSpec? PgBouncer { get; init; }

    /// <summary>Teal's proxy: most client connections at once; clients over it get 53300. 0 for no cap.</summary>
    public int MaxConnections { get; init; }

    /// <summary>Teal's proxy: PEM certificate and key files for TLS clients (default: the one Teal generates).</summary>
    public string? TlsCertificateFile { get; init; }

    public string? TlsKeyFile { get; init; }

    /// <summary>Teal's proxy: refuse clients that do not use TLS.</summary>
    public bool RequireTls { get; init; }

    /// <summary>Teal's proxy: TLS to the servers (libpq's sslmode values disable, prefer, require, verify-full).</summary>
    public ServerTlsMode ServerTls { get; init; } = ServerTlsMode.Prefer;

    /// <summary>Teal's proxy, verify-full: PEM file of the CA certificates to trust (default: the system's).</summary>
    public string? ServerTlsRootFile { get; init; }

    /// <summary>PgBouncer admin password; kept in the secrets file, never stored with the endpoint.</summary>
    public string? PgBouncerPassword { get; init; }
}
