namespace Teal.Core.Deployments;

/// <summary>What the operator asked for with <c>teal create</c>.</summary>
/// <param name="Name">Deployment name (unique).</param>
/// <param name="Source">Blue: a registered writer instance.</param>
public sealed record CreateDeploymentSpec(string Name, string Source)
{
    /// <summary>Managed green: engine version to run (default: blue's major version).</summary>
    public string? TargetEngineVersion { get; init; }

    /// <summary>Managed green: settings (the parameter group).</summary>
    public IReadOnlyDictionary<string, string> TargetParameters { get; init; } = new Dictionary<string, string>();

    /// <summary>Managed green: how many readers (physical replicas of green) to make before AVAILABLE.</summary>
    public int TargetReaders { get; init; }

    /// <summary>External green: connection string of an empty server the operator provisioned.</summary>
    public string? TargetConnection { get; init; }

    /// <summary>External green: the password for <see cref="TargetConnection"/>, given apart from it (never in a command line).</summary>
    public string? TargetPassword { get; init; }

    public IReadOnlyDictionary<string, string> Tags { get; init; } = new Dictionary<string, string>();

    /// <summary>Only these tables (schema.table); empty means all.</summary>
    public IReadOnlyList<string> Tables { get; init; } = [];

    public bool CopyRoles { get; init; } = true;

    /// <summary>
    /// Sessions of the initial copy (<c>--copy-parallelism N</c>); 1 is the engine's own copy;
    /// null takes <see cref="Deployment.DefaultCopyParallelism"/>.
    /// </summary>
    public int? CopyParallelism { get; init; }

    /// <summary>Start reverse replication (green → old blue) at switchover, for a switchback without loss.</summary>
    public bool ReverseReplication { get; init; } = true;

    /// <summary>Logical slots on blue read by change-data-capture consumers, re-created on green at switchover.</summary>
    public IReadOnlyList<string> CdcSlots { get; init; } = [];

    /// <summary>Cutovers wait (within their timeout) until every CDC consumer confirmed the final position.</summary>
    public bool CdcWait { get; init; }
}
