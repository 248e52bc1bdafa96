namespace Teal.Core.Deployments;

/// <summary>A deployment's lifecycle status; the names (in JSON: SCREAMING_SNAKE) are RDS's.</summary>
public enum DeploymentStatus
{
    Provisioning,
    Available,
    SwitchoverInProgress,
    SwitchoverCompleted,
    /// <summary>A switchover was rolled back; a new one may be tried.</summary>
    SwitchoverFailed,
    /// <summary>
    /// A switchover past its point of no return met an error that will not pass by itself and
    /// waits for the operator (<c>teal switchover ID --resume</c>); nothing runs it meanwhile.
    /// </summary>
    SwitchoverStopped,
    InvalidConfiguration,
    Deleting,
}

/// <summary>State of the replication from blue to green (or back, after a switchover).</summary>
public enum ReplicationState
{
    /// <summary>Initial copy of the tables is running.</summary>
    Syncing,
    Replicating,
    /// <summary>Replication runs but something needs the operator (DDL seen on blue, a skipped table).</summary>
    Degraded,
    Stopped,
    ReverseReplicating,
}
