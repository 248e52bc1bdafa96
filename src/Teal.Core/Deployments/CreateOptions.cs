namespace Teal.Core.Deployments;

/// <summary>Thresholds and pacing of the create workflow and the replication monitor.</summary>
public sealed record CreateOptions
{
    /// <summary>Where managed greens get their directories (<c>DATA_DIR/instances</c>).</summary>
    public required string InstancesDirectory { get; init; }

    /// <summary>How often the workflow and the monitor read replication status (and write the heartbeat).</summary>
    public TimeSpan PollInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>CATCH_UP completes once the lag is at most this many bytes …</summary>
    public long CatchUpLagBytes { get; init; } = 1024 * 1024;

    /// <summary>… and at most this many seconds.</summary>
    public double CatchUpLagSeconds { get; init; } = 2;

    /// <summary>CREATE_TOPOLOGY fails when green's readers are not all streaming this long after they were made.</summary>
    public TimeSpan ReaderStartTimeout { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>A status read that takes longer than this counts as a failure to read.</summary>
    public TimeSpan StatusTimeout { get; init; } = TimeSpan.FromSeconds(10);
}
