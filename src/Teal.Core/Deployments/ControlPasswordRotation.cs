using Microsoft.Extensions.Logging;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Core.Events;
using Teal.Core.Instances;
using Teal.Core.Secrets;
using Teal.Core.State;

namespace Teal.Core.Deployments;

/// <summary>
/// <c>teal instance rotate-password NAME</c>: gives Teal's own login on a server a new password.
/// The subscriptions that log in with it (forward replication on green when the server is a
/// blue, reverse replication on the old blue when it is production) keep the old one in their
/// conninfo; each such deployment's link is rebuilt and read at once, and a link's first status
/// read moves its subscription to the conninfo it expects (ALTER SUBSCRIPTION … CONNECTION).
/// The server's readers that Teal made stream as that login too: each gets the new password
/// (<see cref="IInstanceProvisioner.SetReaderControlPasswordAsync"/>), and Teal's secret for it
/// follows (a physical copy replays the new password). The password is never returned, logged or
/// put in an event.
/// </summary>
public sealed partial class ControlPasswordRotation(IStateStore state, ISecretStore secrets, EngineRegistry engines, DeploymentLinks links, ReplicationMonitor monitor, ILogger<ControlPasswordRotation> logger)
{
    /// <summary>Rotates the password; returns the names of the deployments whose replication followed it.</summary>
    public async Task<IReadOnlyList<string>> RotateAsync(string name, CancellationToken cancellationToken)
    {
        var instance = await state.GetInstanceAsync(name, cancellationToken)
            ?? throw new TealException("instance.not-found", $"no instance named '{name}'", "see `teal instance list`") { Kind = TealErrorKind.NotFound };
        if (instance.User == DeploymentLinks.ControlUser)
        {
            throw new TealException(
                "instance.control-registered",
                $"'{name}' is registered as {DeploymentLinks.ControlUser} itself: its password is yours, not Teal's",
                "change it on the server and register the instance again with the new password");
        }

        var reference = DeploymentLinks.ControlSecretReference(instance);
        var current = secrets.Read(reference)
            ?? throw new TealException("instance.no-control-login", $"Teal has no login of its own on '{name}' yet: there is no password to rotate", "it is made by the first deployment that uses the instance") { Kind = TealErrorKind.NotFound };
        if (instance.ReaderOf is not null)
        {
            throw new TealException("instance.rotate-reader", $"'{name}' is a reader: its logins are its writer's (a physical copy)", $"rotate the password on '{instance.ReaderOf}'");
        }

        var deployments = await state.ListDeploymentsAsync(cancellationToken);
        var instances = await state.ListInstancesAsync(cancellationToken);
        var onServer = instances.Where(i => SameServer(i, instance)).ToList();
        var readers = instances.Where(i => i.ReaderOf is { } writer && onServer.Any(s => s.Name == writer) && i.ReplicationSlot is not null).ToList();
        if (readers.FirstOrDefault(r => r.Managed is null || !engines.Provisioner(r.Engine).CreatesReaders) is { } foreign)
        {
            // A reader's walreceiver logs in with the password it was given at its next reconnect;
            // Teal can give a new one only to a reader whose files are its own.
            throw new TealException(
                "instance.rotate-has-readers",
                $"'{name}' has reader '{foreign.Name}', which streams as {DeploymentLinks.ControlUser} with the current password and is not one Teal manages",
                $"remove it first (teal instance remove {foreign.Name}), or keep the password");
        }

        if (deployments.FirstOrDefault(d => d.Status == DeploymentStatus.SwitchoverInProgress && onServer.Any(i => i.Name == d.Blue || i.Name == d.Green)) is { } switching)
        {
            throw new TealException("instance.rotate-during-switchover", $"deployment '{switching.Name}' is switching over on '{name}'", "rotate once the switchover has ended") { Kind = TealErrorKind.Conflict };
        }

        // Every deployment on the server has its links held from before the password changes
        // until they are forgotten: a monitor round running with a link built on the old
        // password would fail to log in, re-key the role back to the old password, or move its
        // subscription back to the old conninfo; and a link closed under a round fails the
        // round. Held in id order, so that two rotations never wait on each other.
        var affected = deployments.Where(d => onServer.Any(i => i.Name == d.Blue || i.Name == d.Green)).OrderBy(d => d.Id.ToString(), StringComparer.Ordinal).ToList();
        var holds = new List<LinkHold>();
        try
        {
            foreach (var deployment in affected)
            {
                holds.Add(await links.HoldAsync(deployment.Id, cancellationToken));
            }

            var control = ConnectionInfo.For(instance, current) with { User = DeploymentLinks.ControlUser };
            var next = DeploymentLinks.NewControlPassword();
            await engines.Engine(instance.Engine).ChangeControlPasswordAsync(control, next, cancellationToken);
            secrets.Write(reference, next);

            // Each reader streams with the old password until its walreceiver next connects;
            // given the new one right after the change, it logs in with that. Its own copy of the
            // role replays the change, so Teal's secret for it follows too.
            foreach (var reader in readers)
            {
                await engines.Provisioner(reader.Engine).SetReaderControlPasswordAsync(reader, control with { Password = next }, cancellationToken);
                secrets.Write(DeploymentLinks.ControlSecretReference(reader), next);
            }

            // The cached links hold pooled sessions and the spec with the old password.
            foreach (var hold in holds)
            {
                await hold.ForgetAsync();
            }
        }
        finally
        {
            foreach (var hold in holds)
            {
                await hold.DisposeAsync();
            }
        }

        var followed = new List<string>();
        foreach (var deployment in affected.Where(ReplicationMonitor.IsWatched))
        {
            // The first status read of the new link moves the subscription to the new conninfo.
            await monitor.PollAsync(deployment, cancellationToken);
            followed.Add(deployment.Name);
        }

        await state.AppendEventAsync(null, EventKinds.ControlPasswordRotated, $"Teal's login on instance '{name}' has a new password; replication followed it in {followed.Count} deployment(s) and {readers.Count} reader(s)", new Dictionary<string, string> { ["instance"] = name, ["deployments"] = string.Join(",", followed), ["readers"] = string.Join(",", readers.Select(r => r.Name)) }, cancellationToken);
        LogRotated(name, followed.Count);
        return followed;
    }

    /// <summary>The control password is per server (host and port), whatever the instance's name.</summary>
    private static bool SameServer(Instance a, Instance b) => DeploymentLinks.ControlSecretReference(a) == DeploymentLinks.ControlSecretReference(b);

    [LoggerMessage(EventId = 1303, Level = LogLevel.Information, Message = "Teal's login on instance {Instance} has a new password; {Deployments} deployment(s) followed it")]
    private partial void LogRotated(string instance, int deployments);
}
