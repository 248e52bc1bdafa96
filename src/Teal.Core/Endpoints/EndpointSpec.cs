using Teal.Core.Instances;

namespace Teal.Core.Endpoints;

public enum EndpointKind
{
    /// <summary>Teal's own TCP proxy, served by <c>teal serve</c>.</summary>
    Proxy,

    /// <summary>A PgBouncer the user runs; Teal drives it through its admin console.</summary>
    PgBouncer,
}

/// <summary>How Teal's proxy talks to the servers behind an endpoint, as libpq's <c>sslmode</c>.</summary>
public enum ServerTlsMode
{
    /// <summary>Plain text.</summary>
    Disable,

    /// <summary>TLS when the server offers it, plain text when it does not; the certificate is not checked.</summary>
    Prefer,

    /// <summary>TLS or no connection; the certificate is not checked.</summary>
    Require,

    /// <summary>TLS with a certificate that chains to a trusted root and names the host Teal connects to.</summary>
    VerifyFull,
}

/// <summary>
/// An endpoint as the operator declared it: where applications connect and which instance it
/// routes to. The route follows the instance's name, so when green takes blue's name at
/// switchover the endpoint moves with it.
/// </summary>
public sealed record EndpointSpec(string Name, EndpointKind Kind, string Instance)
{
    /// <summary>Proxy: address to listen on (<c>127.0.0.1:6432</c>).</summary>
    public string? Listen { get; init; }

    public InstanceRole Role { get; init; } = InstanceRole.Writer;

    /// <summary>PgBouncer: how to reach and repoint it.</summary>
    public PgBouncerSpec? PgBouncer { get; init; }

    /// <summary>Reader canary: green, whose streaming readers receive <see cref="CanaryPercent"/>% of new connections in turn (a reader named here stands for its writer's readers).</summary>
    public string? CanaryInstance { get; init; }

    public int CanaryPercent { get; init; }

    /// <summary>Proxy: most client connections at once (active, held or logging in); 0 for no cap.</summary>
    public int MaxConnections { get; init; }

    /// <summary>Proxy: PEM certificate shown to TLS clients; null for the one Teal generates in its data directory.</summary>
    public string? TlsCertificateFile { get; init; }

    /// <summary>Proxy: the PEM private key of <see cref="TlsCertificateFile"/>.</summary>
    public string? TlsKeyFile { get; init; }

    /// <summary>Proxy: refuse clients that do not use TLS.</summary>
    public bool RequireTls { get; init; }

    /// <summary>Proxy: TLS to the servers behind the endpoint (PostgreSQL only).</summary>
    public ServerTlsMode ServerTls { get; init; } = ServerTlsMode.Prefer;

    /// <summary>Proxy: PEM file of the root certificates <see cref="ServerTlsMode.VerifyFull"/> trusts; null for the system's.</summary>
    public string? ServerTlsRootFile { get; init; }

    public DateTimeOffset CreatedAt { get; init; }
}

/// <summary>How Teal reaches a PgBouncer and which of its databases it moves.</summary>
/// <param name="AdminHost">PgBouncer's listen address.</param>
/// <param name="AdminPort">PgBouncer's port.</param>
/// <param name="AdminUser">A user in PgBouncer's <c>admin_users</c>.</param>
/// <param name="Database">The database entry (in <c>[databases]</c>) applications use.</param>
/// <param name="ConfigFile">The ini file holding that entry; Teal rewrites its line, then RELOADs.</param>
public sealed record PgBouncerSpec(string AdminHost, int AdminPort, string AdminUser, string Database, string ConfigFile)
{
    /// <summary>Key of the admin password in the secrets store.</summary>
    public string? SecretRef { get; init; }
}

/// <summary>Where an endpoint sends connections: an instance and its address.</summary>
public sealed record EndpointTarget(string Instance, string Host, int Port, string Database)
{
    public override string ToString() => $"{Instance} ({Host}:{Port})";
}

/// <summary>Per-endpoint figures.</summary>
public sealed record EndpointStats(long Active, long Held, long Total, long BytesFromClients, long BytesToClients, long Errors)
{
    public static EndpointStats Empty { get; } = new(0, 0, 0, 0, 0, 0);

    /// <summary>Sessions a switchover moved to the new target with their state (Teal's proxy only).</summary>
    public long SessionsMoved { get; init; }

    /// <summary>Sessions a switchover closed (57P01) because they could not move, or cut at the drain budget.</summary>
    public long SessionsClosed { get; init; }
}
