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

    /// <summary>Readers asked for green (<c>--target-readers</c>), made by CREATE_TOPOLOGY.</summary>
    public int TargetReaders { get; init; }

    /// <summary>Green's readers (before a switchover; production's after one) and how they stream, as last read.</summary>
    public IReadOnlyList<ReaderStatus> Readers { get; init; } = [];

    /// <summary>Tables replicated (schema.table); empty means every table.</summary>
    public IReadOnlyList<string> Tables { get; init; } = [];

    /// <summary>Whether blue's roles were copied to green with the schema.</summary>
    public bool CopyRoles { get; init; } = true;

    /// <summary>
    /// Sessions of the initial copy: 1 is the engine's own copy (PostgreSQL: the subscription's
    /// copy_data); more is Teal's parallel copy in key ranges. A deployment stored before this
    /// existed reads 1, the copy it was started with.
    /// </summary>
    public int CopyParallelism { get; init; } = 1;

    /// <summary>The copy parallelism when <c>teal create</c> names none: one session per core of Teal's machine, at most 8.</summary>
    public static int DefaultCopyParallelism => Math.Clamp(Environment.ProcessorCount, 1, 8);

    /// <summary>The most sessions a copy may use (each holds a connection on both sides).</summary>
    public const int MaxCopyParallelism = 64;

    /// <summary>
    /// What the prerequisites found that logical replication will not carry (unlogged tables,
    /// large objects, sequences, materialized views, extension versions), each with its fix.
    /// </summary>
    public IReadOnlyList<Guardrails.CheckResult> Warnings { get; init; } = [];

    /// <summary>
    /// Whether a switchover starts reverse replication (green → old blue) so that a switchback
    /// loses nothing; <c>teal create --no-reverse-replication</c> turns it off.
    /// </summary>
    public bool ReverseReplication { get; init; } = true;

    /// <summary>
    /// Logical slots on blue that change-data-capture consumers read (<c>teal create --cdc-slot</c>):
    /// each cutover creates a slot of the same name and plugin on the side it opens, before that
    /// side takes a write, so a consumer moves over with no gap and no duplicate.
    /// </summary>
    public IReadOnlyList<string> CdcSlots { get; init; } = [];

    /// <summary>
    /// Every cutover of this deployment (switchover and switchback) waits, within its timeout and
    /// inside the write pause, until each CDC consumer has confirmed the final position of the
    /// side being left (<c>teal create --cdc-wait</c>); past the timeout it rolls back.
    /// </summary>
    public bool CdcWait { get; init; }

    /// <summary>
    /// Production is green and replication runs green → blue (after a switchover with reverse
    /// replication, until a switchback or <c>teal finish</c>). The link then treats green as the
    /// side to leave and blue as the side to open: a switchback is the same plan in reverse.
    /// </summary>
    public bool Reversed { get; init; }

    /// <summary>The name green had before it took blue's at the switchover; it takes it back at switchback.</summary>
    public string? GreenNameBeforeSwitchover { get; init; }

    /// <summary>The instance clients write to now: blue, or green while <see cref="Reversed"/>.</summary>
    public string Production => Reversed ? Green : Blue;

    /// <summary>The instance a cutover would open: green, or (old) blue while <see cref="Reversed"/>.</summary>
    public string Standby => Reversed ? Blue : Green;

    /// <summary>The last switchover (in progress, completed or rolled back); null before the first.</summary>
    public Switchover.SwitchoverState? Switchover { get; init; }

    public DateTimeOffset CreatedAt { get; init; }

    public DateTimeOffset UpdatedAt { get; init; }

    public DeploymentTask? Task(DeploymentTaskKind kind) => Tasks.FirstOrDefault(t => t.Kind == kind);

    /// <summary>A copy with one task replaced (tasks keep their order).</summary>
    public Deployment WithTask(DeploymentTask task) =>
        this with { Tasks = Tasks.Select(t => t.Kind == task.Kind ? task : t).ToList() };
}
