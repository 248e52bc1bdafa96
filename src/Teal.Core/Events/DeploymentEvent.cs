using Teal.Core.Deployments;

namespace Teal.Core.Events;

/// <summary>A persisted, numbered event. <see cref="Seq"/> grows by one per event across Teal.</summary>
public sealed record DeploymentEvent(long Seq, DateTimeOffset Time, DeploymentId? DeploymentId, string Kind, string Message)
{
    public IReadOnlyDictionary<string, string> Data { get; init; } = new Dictionary<string, string>();
}

/// <summary>The event kinds Teal emits; stable strings that scripts may match on.</summary>
public static class EventKinds
{
    public const string InstanceAdded = "instance-added";
    public const string InstanceRemoved = "instance-removed";
    public const string InstanceUnfenced = "instance-unfenced";
    public const string ControlPasswordRotated = "control-password-rotated";
    public const string Created = "created";
    public const string PrerequisiteWarning = "prerequisite-warning";
    public const string TaskStarted = "task-started";
    public const string TaskCompleted = "task-completed";
    public const string CreationFailed = "creation-failed";
    public const string Available = "available";
    public const string ReplicationStateChanged = "replication-state-changed";
    public const string ReplicationDegraded = "replication-degraded";
    public const string DdlAcknowledged = "ddl-acknowledged";
    public const string DdlApplied = "ddl-applied";
    public const string DdlReplicated = "ddl-replicated";
    public const string TableAdded = "table-added";
    public const string Verified = "verified";
    public const string SwitchoverStarted = "switchover-started";
    public const string SwitchoverPhase = "switchover-phase";
    public const string SwitchoverCompleted = "switchover-completed";
    public const string SwitchoverCanceled = "switchover-canceled";
    public const string SwitchoverStopped = "switchover-stopped";
    public const string SwitchoverRetrying = "switchover-retrying";
    public const string MemberRenamed = "member-renamed";
    public const string SequencesSynced = "sequences-synced";
    public const string Positions = "positions";
    public const string Switchback = "switchback";
    public const string ReverseReplicationStarted = "reverse-replication-started";
    public const string CdcSlotsCreated = "cdc-slots-created";
    public const string Finished = "finished";
    public const string Deleting = "deleting";
    public const string Deleted = "deleted";

    /// <summary>A control plane took the leader lock of a shared state store (not about one deployment).</summary>
    public const string LeaderElected = "leader-elected";
}
