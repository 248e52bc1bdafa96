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
    // Keyed by direction too: while a deployment is reversed (after a switchover with reverse
    // replication) its link runs from green to blue, and a switchback flips it back.
    private readonly ConcurrentDictionary<(DeploymentId Id, bool Reversed), Lazy<Task<IReplicationLink>>> _links = new();
    private readonly Lock _controlLock = new();

    // One per deployment ever held, kept for Teal's lifetime: removing one while another caller
    // waits on it would let two holders in. A deployment costs one idle semaphore.
    private readonly ConcurrentDictionary<DeploymentId, SemaphoreSlim> _holds = new();

    /// <summary>
    /// Teal's own login on every server it fences: the one login a fence leaves (PostgreSQL:
    /// a role of that name; ARCHITECTURE.md, "The fence").
    /// </summary>
    public const string ControlUser = "teal_control";

    /// <summary>The stem of every object Teal creates for a deployment (publication, slot, …).</summary>
    public static string ObjectName(DeploymentId id) => "teal_" + id.Suffix;

    /// <summary>
    /// The deployment's link in its current direction: blue → green, or, while
    /// <see cref="Deployment.Reversed"/>, green → blue (the link's "blue" is then the
    /// deployment's green, production).
    /// </summary>
    public Task<IReplicationLink> GetAsync(Deployment deployment, CancellationToken cancellationToken) =>
        _links.GetOrAdd((deployment.Id, deployment.Reversed), _ => new Lazy<Task<IReplicationLink>>(() => CreateAsync(deployment, cancellationToken))).Value;

    /// <summary>Forgets a link (after delete, or when instances were renamed or changed).</summary>
    public void Forget(DeploymentId id)
    {
        _links.TryRemove((id, false), out _);
        _links.TryRemove((id, true), out _);
    }

    /// <summary>
    /// Forgets a link and closes what it holds open (its connection pools keep sessions on both
    /// sides), once the holder of the deployment's links (a monitor round) is done with it.
    /// </summary>
    public async Task ForgetAsync(DeploymentId id)
    {
        await using var hold = await HoldAsync(id, CancellationToken.None);
        await hold.ForgetAsync();
    }

    /// <summary>
    /// Forgets and closes the link of one direction only. A cutover that turned the deployment
    /// round closes the direction it left: the monitor (or a password rotation) may already be
    /// using a link of the new direction, which must stay open.
    /// </summary>
    public async Task ForgetAsync(DeploymentId id, bool reversed)
    {
        await using var hold = await HoldAsync(id, CancellationToken.None);
        await hold.ForgetAsync(reversed);
    }

    /// <summary>
    /// Takes the deployment's links for the caller alone: a monitor round, or work that replaces
    /// or removes what the links reach (a password rotation, a delete). While held, no other
    /// holder runs and <see cref="ForgetAsync(DeploymentId)"/> waits, so a link is never closed
    /// under a round that uses it, and a round never starts with a link the holder is replacing.
    /// </summary>
    public async Task<LinkHold> HoldAsync(DeploymentId id, CancellationToken cancellationToken)
    {
        var gate = _holds.GetOrAdd(id, _ => new SemaphoreSlim(1, 1));
        await gate.WaitAsync(cancellationToken);
        return new LinkHold(this, id, gate);
    }

    /// <summary>Takes the deployment's links only if no one holds them (a monitor round skips a deployment that is busy).</summary>
    public LinkHold? TryHold(DeploymentId id)
    {
        var gate = _holds.GetOrAdd(id, _ => new SemaphoreSlim(1, 1));
        return gate.Wait(0) ? new LinkHold(this, id, gate) : null;
    }

    /// <summary>Forgets and closes a link; the caller holds the deployment's links (<see cref="LinkHold"/>).</summary>
    internal async Task ForgetHeldAsync(DeploymentId id, bool reversed)
    {
        if (_links.TryRemove((id, reversed), out var entry) && entry.IsValueCreated && entry.Value.IsCompletedSuccessfully && entry.Value.Result is IAsyncDisposable disposable)
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
            BlueManaged = blue.Managed is not null,
            CopyRoles = deployment.CopyRoles,
            CopyParallelism = deployment.CopyParallelism,
            ExpectedGreenVersion = green.Managed?.EngineVersion,
            ExpectedGreenParameters = deployment.TargetParameters,
            BlueControlPassword = ControlPassword(blue),
            GreenControlPassword = ControlPassword(green),
            ReverseReplication = deployment.ReverseReplication,
            CdcSlots = deployment.CdcSlots,
        };

    /// <summary>
    /// The link from production (green) back to the old blue while the deployment is reversed:
    /// the same objects under the same name, with the sides swapped. A switchback then runs
    /// forward replication back in place.
    /// </summary>
    public LinkSpec ReversedSpec(Deployment deployment, Instance blue, Instance green) =>
        new(ObjectName(deployment.Id), Connection(green).WithDatabase(deployment.Database), Connection(blue).WithDatabase(deployment.Database))
        {
            Tables = deployment.Tables,
            CopyRoles = deployment.CopyRoles,
            BlueControlPassword = ControlPassword(green),
            GreenControlPassword = ControlPassword(blue),
            // The fence follows the server: a side Teal provisioned is fenced by its pg_hba.conf
            // (its readers stay readable), whichever way the link runs.
            BlueManaged = green.Managed is not null,
            GreenManaged = blue.Managed is not null,
            // The switchback always re-establishes replication blue → green.
            ReverseReplication = true,
            Reversed = true,
            CdcSlots = deployment.CdcSlots,
        };

    /// <summary>
    /// The password of Teal's own login role on a server, generated on first use. Keyed by the
    /// server's address, not the instance's name: names move at switchover, and two deployments
    /// on one server must share the role (and so its password).
    /// </summary>
    public string ControlPassword(Instance instance)
    {
        var reference = ControlSecretReference(instance);
        if (secrets.Read(reference) is { } existing)
        {
            return existing;
        }

        lock (_controlLock)
        {
            if (secrets.Read(reference) is { } raced)
            {
                return raced;
            }

            var generated = NewControlPassword();
            secrets.Write(reference, generated);
            return generated;
        }
    }

    /// <summary>A fresh control password: 32 characters from 24 random bytes, nothing a conninfo or a passfile must escape.</summary>
    public static string NewControlPassword() =>
        Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(24)).Replace('+', 'x').Replace('/', 'y');

    /// <summary>Where <see cref="ControlPassword"/> keeps a server's control password.</summary>
    public static string ControlSecretReference(Instance instance) =>
        $"control/{instance.Host.ToLowerInvariant()}:{instance.Port.ToString(System.Globalization.CultureInfo.InvariantCulture)}";

    public ConnectionInfo Connection(Instance instance) =>
        ConnectionInfo.For(instance, instance.SecretRef is null ? null : secrets.Read(instance.SecretRef));

    private async Task<IReplicationLink> CreateAsync(Deployment deployment, CancellationToken cancellationToken)
    {
        try
        {
            var blue = await RequireAsync(deployment.Blue, cancellationToken);
            var green = await RequireAsync(deployment.Green, cancellationToken);
            return engines.Engine(blue.Engine).Link(deployment.Reversed ? ReversedSpec(deployment, blue, green) : Spec(deployment, blue, green));
        }
        catch
        {
            // A failed build must not be cached: the next caller tries again.
            _links.TryRemove((deployment.Id, deployment.Reversed), out _);
            throw;
        }
    }

    private async Task<Instance> RequireAsync(string name, CancellationToken cancellationToken) =>
        await state.GetInstanceAsync(name, cancellationToken)
        ?? throw new TealException("instance.not-found", $"instance '{name}' is not registered", "see `teal instance list`") { Kind = TealErrorKind.NotFound };
}
