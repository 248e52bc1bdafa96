using Teal.Core.Deployments;
using Teal.Core.Endpoints;
using Teal.Core.Events;
using Teal.Core.Instances;

namespace Teal.Core.State;

/// <summary>
/// Teal's durable state: instances, deployments, endpoints, events and the switchover journal.
/// The embedded default is one SQLite file under the data directory. Writes are durable when
/// the call returns — the switchover journal depends on it.
/// </summary>
public interface IStateStore
{
    // Instances
    Task<Instance?> GetInstanceAsync(string name, CancellationToken cancellationToken);

    Task<IReadOnlyList<Instance>> ListInstancesAsync(CancellationToken cancellationToken);

    /// <summary>Adds an instance; a <see cref="Errors.TealException"/> (conflict) when the name is taken.</summary>
    Task AddInstanceAsync(Instance instance, CancellationToken cancellationToken);

    Task UpdateInstanceAsync(Instance instance, CancellationToken cancellationToken);

    Task RemoveInstanceAsync(string name, CancellationToken cancellationToken);

    // Deployments
    Task<Deployment?> GetDeploymentAsync(DeploymentId id, CancellationToken cancellationToken);

    Task<Deployment?> FindDeploymentAsync(string name, CancellationToken cancellationToken);

    Task<IReadOnlyList<Deployment>> ListDeploymentsAsync(CancellationToken cancellationToken);

    /// <summary>Adds a deployment; a conflict when the name is taken.</summary>
    Task AddDeploymentAsync(Deployment deployment, CancellationToken cancellationToken);

    /// <summary>
    /// Applies <paramref name="change"/> to the deployment as stored and writes the result, in one
    /// write transaction: every writer (monitor, create workflow, switchover) changes the fields it
    /// owns on the latest record, so none can overwrite another's update with a stale copy.
    /// Returns the stored result; a change that returns its argument writes nothing.
    /// </summary>
    Task<Deployment> UpdateDeploymentAsync(DeploymentId id, Func<Deployment, Deployment> change, CancellationToken cancellationToken);

    Task RemoveDeploymentAsync(DeploymentId id, CancellationToken cancellationToken);

    // Endpoints
    Task<EndpointSpec?> GetEndpointAsync(string name, CancellationToken cancellationToken);

    Task<IReadOnlyList<EndpointSpec>> ListEndpointsAsync(CancellationToken cancellationToken);

    Task AddEndpointAsync(EndpointSpec endpoint, CancellationToken cancellationToken);

    Task UpdateEndpointAsync(EndpointSpec endpoint, CancellationToken cancellationToken);

    Task RemoveEndpointAsync(string name, CancellationToken cancellationToken);

    // Events
    Task<DeploymentEvent> AppendEventAsync(DeploymentId? deploymentId, string kind, string message, IReadOnlyDictionary<string, string>? data, CancellationToken cancellationToken);

    /// <summary>Events after <paramref name="afterSeq"/>, oldest first, for one deployment or all.</summary>
    Task<IReadOnlyList<DeploymentEvent>> ListEventsAsync(DeploymentId? deploymentId, long afterSeq, int limit, CancellationToken cancellationToken);

    // Switchover journal
    Task AppendJournalAsync(JournalEntry entry, CancellationToken cancellationToken);

    Task<IReadOnlyList<JournalEntry>> ReadJournalAsync(DeploymentId deploymentId, CancellationToken cancellationToken);

    /// <summary>
    /// Applies several changes in one transaction (the renames at switchover must land together
    /// or not at all).
    /// </summary>
    Task ApplyAsync(StateChange change, CancellationToken cancellationToken);
}

/// <summary>A group of writes applied atomically by <see cref="IStateStore.ApplyAsync"/>.</summary>
public sealed record StateChange
{
    public IReadOnlyList<(string OldName, Instance Instance)> RenamedInstances { get; init; } = [];

    /// <summary>Changes applied to the stored deployments inside the transaction (see <see cref="IStateStore.UpdateDeploymentAsync"/>).</summary>
    public IReadOnlyList<DeploymentChange> Deployments { get; init; } = [];

    public IReadOnlyList<EndpointSpec> Endpoints { get; init; } = [];

    public IReadOnlyList<JournalEntry> Journal { get; init; } = [];

    /// <summary>
    /// Events written in the same transaction: a reader that sees the change sees them too (a
    /// switchover's outcome and the events that tell it, never one without the other).
    /// </summary>
    public IReadOnlyList<NewEvent> Events { get; init; } = [];

    /// <summary>
    /// True (the default): on disk when the call returns, surviving a power loss. False: written
    /// to the file, so it survives a crash of Teal, but the disk flush is left to the next durable
    /// write. Only for changes whose loss on power failure recovery tolerates: it saves a flush
    /// of the disk inside the switchover's write pause.
    /// </summary>
    public bool Durable { get; init; } = true;
}

/// <summary>
/// A change to one deployment, applied by the store to the record as stored when the write
/// transaction runs (never to a copy read earlier); <see cref="Result"/> is what was written.
/// </summary>
public sealed class DeploymentChange(DeploymentId id, Func<Deployment, Deployment> change)
{
    public DeploymentId Id => id;

    /// <summary>The deployment as written, once the change was applied.</summary>
    public Deployment? Result { get; private set; }

    /// <summary>Called by the store inside its write transaction.</summary>
    public Deployment Apply(Deployment stored)
    {
        Result = change(stored);
        return Result;
    }
}

/// <summary>
/// One line of a switchover's journal: a step about to run, done, undone, or failed. Written
/// before the step acts, so that after a crash Teal knows what may have happened.
/// </summary>
public sealed record JournalEntry(DeploymentId DeploymentId, string SwitchoverId, string Step, JournalAction Action, DateTimeOffset At)
{
    /// <summary>Whatever the step needs to undo or finish itself (for example the final LSN).</summary>
    public IReadOnlyDictionary<string, string> Data { get; init; } = new Dictionary<string, string>();

    public long Seq { get; init; }
}

public enum JournalAction
{
    Started,
    Completed,
    Failed,
    UndoStarted,
    Undone,
    /// <summary>The whole switchover finished (completed, rolled back or abandoned); nothing to recover.</summary>
    Closed,
}

/// <summary>An event for <see cref="StateChange.Events"/>; the store numbers and times it as <see cref="IStateStore.AppendEventAsync"/> does.</summary>
public sealed record NewEvent(DeploymentId? DeploymentId, string Kind, string Message, IReadOnlyDictionary<string, string> Data);
