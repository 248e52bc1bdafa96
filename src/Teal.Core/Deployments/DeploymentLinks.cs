using System.Collections.Concurrent;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Core.Instances;
using Teal.Core.Secrets;
using Teal.Core.State;

namespace Teal.Core.Deployments;

/// <summary>
/// One live <see cref="IReplicationLink"/> per deployment. Links keep state in memory (the
/// heartbeat history the lag-in-seconds figure is computed from), so the monitor, the
/// guardrails and the switchover must share the same one.
/// </summary>
public sealed class DeploymentLinks(IStateStore state, ISecretStore secrets, EngineRegistry engines)
{
    private readonly ConcurrentDictionary<DeploymentId, Lazy<Task<IReplicationLink>>> _links = new();

    /// <summary>The stem of every object Teal creates for a deployment (publication, slot, …).</summary>
    public static string ObjectName(DeploymentId id) => "teal_" + id.Suffix;

    public Task<IReplicationLink> GetAsync(Deployment deployment, CancellationToken cancellationToken) =>
        _links.GetOrAdd(deployment.Id, _ => new Lazy<Task<IReplicationLink>>(() => CreateAsync(deployment, cancellationToken))).Value;

    /// <summary>Forgets a link (after delete, or when instances were renamed or changed).</summary>
    public void Forget(DeploymentId id) => _links.TryRemove(id, out _);

    /// <summary>Forgets a link and closes what it holds open (its connection pools keep sessions on both sides).</summary>
    public async Task ForgetAsync(DeploymentId id)
    {
        if (_links.TryRemove(id, out var entry) && entry.IsValueCreated && entry.Value.IsCompletedSuccessfully && entry.Value.Result is IAsyncDisposable disposable)
        {
            await disposable.DisposeAsync();
        }
    }

    /// <summary>Builds a link for a deployment that is not stored yet (the create refusal path).</summary>
    public LinkSpec Spec(Deployment deployment, Instance blue, Instance green) =>
        new(ObjectName(deployment.Id), Connection(blue).WithDatabase(deployment.Database), Connection(green).WithDatabase(deployment.Database))
        {
            Tables = deployment.Tables,
            GreenManaged = deployment.GreenManaged,
            CopyRoles = deployment.CopyRoles,
            ExpectedGreenVersion = green.Managed?.EngineVersion,
            ExpectedGreenParameters = deployment.TargetParameters,
        };

    public ConnectionInfo Connection(Instance instance) =>
        ConnectionInfo.For(instance, instance.SecretRef is null ? null : secrets.Read(instance.SecretRef));

    private async Task<IReplicationLink> CreateAsync(Deployment deployment, CancellationToken cancellationToken)
    {
        try
        {
            var blue = await RequireAsync(deployment.Blue, cancellationToken);
            var green = await RequireAsync(deployment.Green, cancellationToken);
            return engines.Engine(blue.Engine).Link(Spec(deployment, blue, green));
        }
        catch
        {
            // A failed build must not be cached: the next caller tries again.
            Forget(deployment.Id);
            throw;
        }
    }

    private async Task<Instance> RequireAsync(string name, CancellationToken cancellationToken) =>
        await state.GetInstanceAsync(name, cancellationToken)
        ?? throw new TealException("instance.not-found", $"instance '{name}' is not registered", "see `teal instance list`") { Kind = TealErrorKind.NotFound };
}
