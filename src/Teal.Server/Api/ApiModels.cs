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

public sealed record HealthView(string Status, string Version)
{
    /// <summary>Where the state is: <c>sqlite</c> or <c>postgresql</c>.</summary>
    public string? State { get; init; }

    /// <summary><c>leader</c>, or <c>standby</c> (a shared state store another server leads: reads only).</summary>
    public string? Role { get; init; }

    /// <summary>The leader's URL as it recorded it, when known.</summary>
    public string? Leader { get; init; }

    /// <summary>Whether its endpoints listen yet (a standby binds none, and is ready as such): <c>GET /readyz</c>.</summary>
    public bool? Ready { get; init; }
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

    /// <summary>The view of a declaration and what serves it; only Teal's proxy shows a TLS certificate.</summary>
    public static EndpointView From(DeclaredEndpoint endpoint)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        return From(endpoint.Spec, endpoint.Live?.Stats) with { TlsFingerprint = (endpoint.Live as Teal.Proxy.Endpoints.ProxyEndpoint)?.TlsFingerprint };
    }

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
