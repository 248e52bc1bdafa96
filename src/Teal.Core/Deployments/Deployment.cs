namespace Teal.Core.Deployments;

/// <summary>
/// A blue/green pair with its replication, tasks and status. Immutable: every change makes a
/// new record (<c>with</c>) that the state store persists, so a reader never sees half an update.
/// </summary>
public sealed record Deployment(DeploymentId Id, string Name, DeploymentStatus Status)
{
    /// <summary>Name of the blue (production) instance.</summary>
    public required string Blue { get; init; }

    /// <summary>Name of the green instance (the staged copy).</summary>
    public required string Green { get; init; }

    /// <summary>Whether Teal provisioned green (and may remove it with <c>--delete-target</c>).</summary>
    public bool GreenManaged { get; init; }

    /// <summary>The database replicated from blue to green.</summary>
    public required string Database { get; init; }

    /// <summary>Why the deployment is in its status (a failure reason, a refusal).</summary>
    public string? StatusReason { get; init; }

    public ReplicationStatus Replication { get; init; } = new(ReplicationState.Syncing);

    public IReadOnlyList<DeploymentTask> Tasks { get; init; } = [];

    public IReadOnlyDictionary<string, string> Tags { get; init; } = new Dictionary<string, string>();

    /// <summary>Engine settings requested for green (the parameter group).</summary>
    public IReadOnlyDictionary<string, string> TargetParameters { get; init; } = new Dictionary<string, string>();

    /// <summary>Tables replicated (schema.table); empty means every table.</summary>
    public IReadOnlyList<string> Tables { get; init; } = [];

    /// <summary>Whether blue's roles were copied to green with the schema.</summary>
    public bool CopyRoles { get; init; } = true;

    /// <summary>
    /// What the prerequisites found that logical replication will not carry (unlogged tables,
    /// large objects, sequences, materialized views, extension versions), each with its fix.
    /// </summary>
    public IReadOnlyList<Guardrails.CheckResult> Warnings { get; init; } = [];

    /// <summary>The last switchover (in progress, completed or rolled back); null before the first.</summary>
    public Switchover.SwitchoverState? Switchover { get; init; }

    public DateTimeOffset CreatedAt { get; init; }

    public DateTimeOffset UpdatedAt { get; init; }

    public DeploymentTask? Task(DeploymentTaskKind kind) => Tasks.FirstOrDefault(t => t.Kind == kind);

    /// <summary>A copy with one task replaced (tasks keep their order).</summary>
    public Deployment WithTask(DeploymentTask task) =>
        this with { Tasks = Tasks.Select(t => t.Kind == task.Kind ? task : t).ToList() };
}
