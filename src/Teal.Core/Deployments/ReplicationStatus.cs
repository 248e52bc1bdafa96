namespace Teal.Core.Deployments;

/// <summary>The latest replication figures, as the monitor last read them.</summary>
public sealed record ReplicationStatus(ReplicationState State)
{
    /// <summary>Why the state is what it is (the DDL statement for DEGRADED, the error for STOPPED).</summary>
    public string? Reason { get; init; }

    /// <summary>Blue's current WAL position minus the slot's confirmed position (PostgreSQL).</summary>
    public long? LagBytes { get; init; }

    /// <summary>WAL blue keeps for the slot: current position minus the slot's restart position.</summary>
    public long? RetainedBytes { get; init; }

    /// <summary>Age on green of the newest heartbeat row Teal wrote on blue.</summary>
    public double? LagSeconds { get; init; }

    /// <summary>Whether the apply worker on green is running.</summary>
    public bool? WorkerRunning { get; init; }

    public DateTimeOffset? ObservedAt { get; init; }

    /// <summary>DDL statements seen on blue and not yet acknowledged.</summary>
    public IReadOnlyList<PendingDdl> PendingDdl { get; init; } = [];

    /// <summary>Tables that exist on blue but that green's subscription does not apply.</summary>
    public IReadOnlyList<string> SkippedTables { get; init; } = [];

    /// <summary>Transactions blue has and green has not applied (MariaDB/MySQL: the GTID distance).</summary>
    public long? LagTransactions { get; init; }

    /// <summary>Recent DDL that replication carried to green by itself (MariaDB/MySQL), newest last.</summary>
    public IReadOnlyList<PendingDdl> ReplicatedDdl { get; init; } = [];
}

/// <summary>A DDL statement recorded on blue by Teal's event trigger.</summary>
public sealed record PendingDdl(long Id, DateTimeOffset At, string CommandTag, string Statement);
