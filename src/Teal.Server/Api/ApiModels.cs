using Teal.Core.Endpoints;
using Teal.Core.Guardrails;
using Teal.Core.Instances;

namespace Teal.Server.Api;

/// <summary>An error as the API returns it (RFC 7807 problem JSON, with Teal's code and hint).</summary>
public sealed record ApiProblem(string Type, string Title, int Status, string Detail, string Code)
{
    public string? Hint { get; init; }

    /// <summary>Every check that ran, when the refusal came from checks (prerequisites, guardrails).</summary>
    public IReadOnlyList<CheckResult>? Checks { get; init; }
}

public sealed record HealthView(string Status, string Version);

/// <summary>
/// Register an existing server (<see cref="Connection"/>) or create a managed one
/// (<see cref="Version"/>, with <see cref="Engine"/>, <see cref="Port"/> and <see cref="Parameters"/>).
/// </summary>
public sealed record AddInstanceRequest(string Name)
{
    public string? Connection { get; init; }

    /// <summary>
    /// The password for <see cref="Connection"/>, given apart from it so that the CLI never puts
    /// it in a command line (<c>--password-file</c>, <c>--password-env</c>, <c>--password-stdin</c>).
    /// </summary>
    public string? Password { get; init; }

    public EngineKind Engine { get; init; } = EngineKind.Postgres;

    public string? Version { get; init; }

    public int? Port { get; init; }

    public IReadOnlyDictionary<string, string> Parameters { get; init; } = new Dictionary<string, string>();

    /// <summary><c>HOST:PORT</c>: also create a proxy endpoint named after the instance, listening there.</summary>
    public string? Endpoint { get; init; }
}

/// <summary>An instance as the API shows it: how to reach it, never its password.</summary>
public sealed record InstanceView(string Name, EngineKind Engine, string Version, string Host, int Port, string User, string Database, InstanceRole Role, bool Managed)
{
    /// <summary>Managed: where its files are.</summary>
    public string? Directory { get; init; }

    /// <summary>A reader: the writer it streams from.</summary>
    public string? ReaderOf { get; init; }

    public IReadOnlyDictionary<string, string> Parameters { get; init; } = new Dictionary<string, string>();

    public DateTimeOffset CreatedAt { get; init; }

    public static InstanceView From(Instance instance)
    {
        ArgumentNullException.ThrowIfNull(instance);
        return new(instance.Name, instance.Engine, instance.Version, instance.Host, instance.Port, instance.User, instance.Database, instance.Role, instance.Managed is not null)
        {
            Directory = instance.Managed?.Directory,
            ReaderOf = instance.ReaderOf,
            Parameters = instance.Managed?.Parameters ?? new Dictionary<string, string>(),
            CreatedAt = instance.CreatedAt,
        };
    }
}

/// <summary>A connection URI with the password, given on explicit request only.</summary>
public sealed record InstanceUrl(string Name, string Url);

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

/// <summary>An endpoint's declaration and, when a live endpoint serves it, its figures.</summary>
public sealed record EndpointView(string Name, EndpointKind Kind, string Instance, InstanceRole Role)
{
    public string? Listen { get; init; }

    public PgBouncerSpec? PgBouncer { get; init; }

    public string? CanaryInstance { get; init; }

    public int CanaryPercent { get; init; }

    public int MaxConnections { get; init; }

    public bool RequireTls { get; init; }

    public ServerTlsMode ServerTls { get; init; }

    /// <summary>SHA-256 fingerprint of the certificate the live endpoint shows TLS clients.</summary>
    public string? TlsFingerprint { get; init; }

    public DateTimeOffset CreatedAt { get; init; }

    /// <summary>Null when no live endpoint serves this declaration (no proxy running it).</summary>
    public EndpointStats? Stats { get; init; }

    public static EndpointView From(EndpointSpec spec, EndpointStats? stats)
    {
        ArgumentNullException.ThrowIfNull(spec);
        return new(spec.Name, spec.Kind, spec.Instance, spec.Role)
        {
            Listen = spec.Listen,
            PgBouncer = spec.PgBouncer,
            CanaryInstance = spec.CanaryInstance,
            CanaryPercent = spec.CanaryPercent,
            MaxConnections = spec.MaxConnections,
            RequireTls = spec.RequireTls,
            ServerTls = spec.ServerTls,
            CreatedAt = spec.CreatedAt,
            Stats = stats,
        };
    }
}

public sealed record AddTablesResult(IReadOnlyList<string> Tables);

/// <summary>Canary weights of a reader endpoint: the share (0–100) of new read connections sent to green's readers.</summary>
public sealed record CanaryRequest(int GreenPercent);
