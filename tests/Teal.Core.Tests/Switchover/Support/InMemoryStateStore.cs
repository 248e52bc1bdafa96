using Teal.Core.Deployments;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Core.Events;
using Teal.Core.Instances;
using Teal.Core.State;

namespace Teal.Core.Tests.Switchover.Support;

/// <summary>
/// The state store's contract in memory, for the executor's unit tier: one lock plays the
/// store's write transaction (deployment changes are applied to the record as stored).
/// </summary>
internal sealed class InMemoryStateStore(TimeProvider time) : IStateStore
{
    private readonly Lock _gate = new();
    private readonly Dictionary<string, Instance> _instances = new(StringComparer.Ordinal);
    private readonly Dictionary<DeploymentId, Deployment> _deployments = [];
    private readonly Dictionary<string, EndpointSpec> _endpoints = new(StringComparer.Ordinal);
    private readonly List<DeploymentEvent> _events = [];
    private readonly List<JournalEntry> _journal = [];
    private readonly List<string> _commits = [];

    /// <summary>How many of the next ApplyAsync calls fail (a state store that cannot write).</summary>
    public int FailNextApplies { get; set; }

    public Task<Instance?> GetInstanceAsync(string name, CancellationToken cancellationToken) => Read(() => _instances.GetValueOrDefault(name));

    public Task<IReadOnlyList<Instance>> ListInstancesAsync(CancellationToken cancellationToken) => Read<IReadOnlyList<Instance>>(() => [.. _instances.Values]);

    public Task AddInstanceAsync(Instance instance, CancellationToken cancellationToken) => Write(() => _instances.Add(instance.Name, instance));

    public Task UpdateInstanceAsync(Instance instance, CancellationToken cancellationToken) => Write(() => _instances[instance.Name] = instance);

    public Task RemoveInstanceAsync(string name, CancellationToken cancellationToken) => Write(() => _instances.Remove(name));

    public Task<Deployment?> GetDeploymentAsync(DeploymentId id, CancellationToken cancellationToken) => Read(() => _deployments.GetValueOrDefault(id));

    public Task<Deployment?> FindDeploymentAsync(string name, CancellationToken cancellationToken) => Read(() => _deployments.Values.FirstOrDefault(d => d.Name == name));

    public Task<IReadOnlyList<Deployment>> ListDeploymentsAsync(CancellationToken cancellationToken) => Read<IReadOnlyList<Deployment>>(() => [.. _deployments.Values]);

    public Task AddDeploymentAsync(Deployment deployment, CancellationToken cancellationToken) => Write(() => _deployments.Add(deployment.Id, deployment));

    public Task<Deployment> UpdateDeploymentAsync(DeploymentId id, Func<Deployment, Deployment> change, CancellationToken cancellationToken)
    {
        var update = new DeploymentChange(id, change);
        lock (_gate)
        {
            Apply(update);
        }

        return Task.FromResult(update.Result!);
    }

    public Task RemoveDeploymentAsync(DeploymentId id, CancellationToken cancellationToken) => Write(() => _deployments.Remove(id));

    public Task<EndpointSpec?> GetEndpointAsync(string name, CancellationToken cancellationToken) => Read(() => _endpoints.GetValueOrDefault(name));

    public Task<IReadOnlyList<EndpointSpec>> ListEndpointsAsync(CancellationToken cancellationToken) => Read<IReadOnlyList<EndpointSpec>>(() => [.. _endpoints.Values]);

    public Task AddEndpointAsync(EndpointSpec endpoint, CancellationToken cancellationToken) => Write(() => _endpoints.Add(endpoint.Name, endpoint));

    public Task UpdateEndpointAsync(EndpointSpec endpoint, CancellationToken cancellationToken) => Write(() => _endpoints[endpoint.Name] = endpoint);

    public Task RemoveEndpointAsync(string name, CancellationToken cancellationToken) => Write(() => _endpoints.Remove(name));

    public Task<DeploymentEvent> AppendEventAsync(DeploymentId? deploymentId, string kind, string message, IReadOnlyDictionary<string, string>? data, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            var e = new DeploymentEvent(_events.Count + 1, time.GetUtcNow(), deploymentId, kind, message) { Data = data ?? new Dictionary<string, string>() };
            _events.Add(e);
            return Task.FromResult(e);
        }
    }

    public Task<IReadOnlyList<DeploymentEvent>> ListEventsAsync(DeploymentId? deploymentId, long afterSeq, int limit, CancellationToken cancellationToken) =>
        Read<IReadOnlyList<DeploymentEvent>>(() => [.. _events.Where(e => e.Seq > afterSeq && (deploymentId is null || e.DeploymentId == deploymentId)).Take(limit)]);

    public Task AppendJournalAsync(JournalEntry entry, CancellationToken cancellationToken) => Write(() => _journal.Add(entry with { Seq = _journal.Count + 1 }));

    public Task<IReadOnlyList<JournalEntry>> ReadJournalAsync(DeploymentId deploymentId, CancellationToken cancellationToken) =>
        Read<IReadOnlyList<JournalEntry>>(() => [.. _journal.Where(e => e.DeploymentId == deploymentId)]);

    public Task ApplyAsync(StateChange change, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            if (FailNextApplies > 0)
            {
                FailNextApplies--;
                throw new IOException("the state store cannot write (test)");
            }

            foreach (var (oldName, _) in change.RenamedInstances)
            {
                _instances.Remove(oldName);
            }

            foreach (var (_, instance) in change.RenamedInstances)
            {
                _instances.Add(instance.Name, instance);
            }

            foreach (var deployment in change.Deployments)
            {
                Apply(deployment);
            }

            foreach (var entry in change.Journal)
            {
                _journal.Add(entry with { Seq = _journal.Count + 1 });
            }

            foreach (var e in change.Events)
            {
                _events.Add(new DeploymentEvent(_events.Count + 1, time.GetUtcNow(), e.DeploymentId, e.Kind, e.Message) { Data = e.Data });
            }

            if (change.Journal.Count > 0)
            {
                _commits.Add(($"{(change.Durable ? "flushed" : "unflushed")}: {string.Join(", ", change.Journal.Select(e => $"{e.Step}:{e.Action}"))}"));
            }

            Applied?.Invoke();
        }

        return Task.CompletedTask;
    }

    /// <summary>Called inside each ApplyAsync once it is applied: what a reader could see right after that commit.</summary>
    public Action? Applied { get; set; }

    /// <summary>Each commit with journal entries, in order: whether it waited for the disk, and its entries.</summary>
    public IReadOnlyList<string> JournalCommits
    {
        get
        {
            lock (_gate)
            {
                return [.. _commits];
            }
        }
    }

    public IReadOnlyList<DeploymentEvent> Events
    {
        get
        {
            lock (_gate)
            {
                return [.. _events];
            }
        }
    }

    private void Apply(DeploymentChange change)
    {
        var stored = _deployments.GetValueOrDefault(change.Id) ?? throw new TealException("deployment.not-found", $"no deployment '{change.Id}'") { Kind = TealErrorKind.NotFound };
        _deployments[change.Id] = change.Apply(stored);
    }

    private Task<T> Read<T>(Func<T> read)
    {
        lock (_gate)
        {
            return Task.FromResult(read());
        }
    }

    private Task Write(Action write)
    {
        lock (_gate)
        {
            write();
        }

        return Task.CompletedTask;
    }
}
