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

    /// <summary>Green's apply worker keeps failing: nothing is applied on green, for every table.</summary>
    public bool Stalled { get; init; }

    /// <summary>The apply worker's last error as green reported it, when Teal could read it.</summary>
    public string? ApplyError { get; init; }

    /// <summary>What blue has and green lacks (schemas, tables, partitions, columns), from both catalogs.</summary>
    public IReadOnlyList<string> SchemaDifferences { get; init; } = [];

    /// <summary>Transactions blue has and green has not applied (MariaDB/MySQL: the GTID distance).</summary>
    public long? LagTransactions { get; init; }

    /// <summary>Recent DDL that replication carried to green by itself (MariaDB/MySQL), newest last.</summary>
    public IReadOnlyList<PendingDdl> ReplicatedDdl { get; init; } = [];

    /// <summary>The deployment's CDC slots on each instance (production and standby), as last read.</summary>
    public IReadOnlyList<CdcSlotStatus> CdcSlots { get; init; } = [];
}

/// <summary>One CDC slot on one instance.</summary>
/// <param name="Instance">The instance the slot is on.</param>
/// <param name="Name">The slot's name.</param>
public sealed record CdcSlotStatus(string Instance, string Name)
{
    public bool Exists { get; init; }

    public string? Plugin { get; init; }

    public bool Active { get; init; }

    public string? ConfirmedPosition { get; init; }

    /// <summary>How far the consumer is behind the instance's current position, in bytes.</summary>
    public long? LagBytes { get; init; }
}

/// <summary>A DDL statement recorded on blue by Teal's event trigger.</summary>
public sealed record PendingDdl(long Id, DateTimeOffset At, string CommandTag, string Statement)
{
    /// <summary>
    /// Whether <see cref="Statement"/> is the command itself and can be run on green. False
    /// when the command ran inside a function or DO block: the statement is then the client's
    /// whole query, which may do more than the DDL.
    /// </summary>
    public bool Replayable { get; init; } = true;

    /// <summary>The objects the command created, changed or dropped (<c>table public.orders</c>).</summary>
    public string? Objects { get; init; }
}

/// <summary>What <c>apply-ddl</c> did with one recorded statement on green.</summary>
public sealed record DdlApplied(long Id, string Statement, string Outcome);

/// <summary>What <c>apply-ddl</c> did: each statement's outcome, what was added to green, and the deployment after.</summary>
public sealed record ApplyDdlReport(IReadOnlyList<DdlApplied> Statements, IReadOnlyList<string> Added, Deployment Deployment);
