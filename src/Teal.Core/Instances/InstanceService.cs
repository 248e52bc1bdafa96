using Microsoft.Extensions.Logging;
using Teal.Core.Endpoints;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Core.Events;
using Teal.Core.Secrets;
using Teal.Core.State;

namespace Teal.Core.Instances;

/// <summary>
/// The instance registry: register an existing server (probed first; its password goes to the
/// secrets file), create a managed one, list, hand out a connection URI on request, remove.
/// A refused add stores nothing and leaves no managed server behind.
/// </summary>
public sealed partial class InstanceService(
    IStateStore state,
    ISecretStore secrets,
    EngineRegistry engines,
    EndpointService endpoints,
    InstanceOptions options,
    TimeProvider time,
    ILogger<InstanceService> logger)
{
    public Task<IReadOnlyList<Instance>> ListAsync(CancellationToken cancellationToken) =>
        state.ListInstancesAsync(cancellationToken);

    public Task<Instance> GetAsync(string name, CancellationToken cancellationToken) =>
        RequireAsync(name, cancellationToken);

    public async Task<Instance> AddAsync(AddInstanceRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        Names.Validate("instance", request.Name);
        if (await state.GetInstanceAsync(request.Name, cancellationToken) is not null)
        {
            throw new TealException("instance.duplicate-name", $"an instance named '{request.Name}' already exists", "choose another name (see `teal instance list`)") { Kind = TealErrorKind.Conflict };
        }

        var endpoint = request.Endpoint is null ? null : new AddEndpointRequest(request.Name, request.Name) { Listen = request.Endpoint };
        if (endpoint is not null)
        {
            await endpoints.ValidateAsync(endpoint, instanceMustExist: false, cancellationToken);
        }

        var (instance, password) = (request.Connection, request.Version) switch
        {
            ({ } connection, null) => await RegisterAsync(request, connection, cancellationToken),
            (null, { } version) => await CreateManagedAsync(request, version, cancellationToken),
            (null, null) => throw new TealException("instance.missing-target", "say which server this is", "give --connection to register an existing server, or --engine and --version to have Teal create one"),
            _ => throw new TealException("instance.target-conflict", "--connection registers an existing server; --version creates a new one", "use one or the other"),
        };

        try
        {
            if (password is not null)
            {
                instance = instance with { SecretRef = SecretReferences.NewInstanceReference() };
                secrets.Write(instance.SecretRef, password);
            }

            await state.AddInstanceAsync(instance, cancellationToken);
        }
        catch
        {
            await DiscardAsync(instance);
            throw;
        }

        var how = instance.Managed is null ? "registered" : "created";
        await state.AppendEventAsync(null, EventKinds.InstanceAdded, $"instance '{instance.Name}' {how}: {instance.Engine.DisplayName()} {instance.Version} on {instance.Address}", new Dictionary<string, string> { ["instance"] = instance.Name }, cancellationToken);
        LogAdded(instance.Name, how, instance.Address);
        if (endpoint is not null)
        {
            try
            {
                await endpoints.AddAsync(endpoint, cancellationToken);
            }
            catch
            {
                // Add both or neither: an instance whose endpoint could not listen is taken back.
                await state.RemoveInstanceAsync(instance.Name, CancellationToken.None);
                await DiscardAsync(instance);
                throw;
            }
        }

        return instance;
    }

    /// <summary>
    /// A full connection URI with the password (or through the instance's endpoint). With
    /// <paramref name="asTeal"/>, as Teal's own login: the one a fenced instance still accepts
    /// (to stage DDL on green, or look at a fenced old blue); never one for applications.
    /// </summary>
    public async Task<InstanceUrl> UrlAsync(string name, bool throughEndpoint, CancellationToken cancellationToken, bool asTeal = false)
    {
        var instance = await RequireAsync(name, cancellationToken);
        var (host, port) = (instance.Host, instance.Port);
        if (throughEndpoint)
        {
            var endpoint = (await state.ListEndpointsAsync(cancellationToken)).FirstOrDefault(e => e.Instance == name && e.Listen is not null)
                ?? throw new TealException("instance.no-endpoint", $"no proxy endpoint routes to '{name}'", $"add one with `teal endpoint add NAME --instance {name} --listen HOST:PORT`") { Kind = TealErrorKind.NotFound };
            var address = ListenAddress.Parse(endpoint.Listen!, "endpoint"); // Listen is not null: filtered above.
            (host, port) = (address.Address.Equals(System.Net.IPAddress.Any) ? "127.0.0.1" : address.Address.ToString(), address.Port);
        }

        var password = instance.SecretRef is null ? null : secrets.Read(instance.SecretRef);
        var user = instance.User;
        if (asTeal)
        {
            user = Teal.Core.Deployments.DeploymentLinks.ControlUser;
            password = secrets.Read(Teal.Core.Deployments.DeploymentLinks.ControlSecretReference(instance))
                ?? throw new TealException("instance.no-teal-login", $"Teal has no login of its own on '{name}' yet", "Teal creates it when a deployment first uses the server") { Kind = TealErrorKind.NotFound };
        }

        var scheme = engines.Engine(instance.Engine).UriScheme;
        var credentials = Uri.EscapeDataString(user) + (password is null ? string.Empty : ":" + Uri.EscapeDataString(password));
        var hostPart = host.Contains(':', StringComparison.Ordinal) ? $"[{host}]" : host;
        return new InstanceUrl(name, $"{scheme}://{credentials}@{hostPart}:{port}/{Uri.EscapeDataString(instance.Database)}");
    }

    /// <summary>
    /// Lifts the fence from an instance (an old blue after <c>teal finish</c>, or after a
    /// deployment was deleted): LOGIN goes back to exactly the roles a fence took it from.
    /// Refused while a deployment still needs the fence (replicating, or mid-switchover).
    /// </summary>
    public async Task<IReadOnlyList<string>> UnfenceAsync(string name, CancellationToken cancellationToken)
    {
        var instance = await RequireAsync(name, cancellationToken);
        var holding = (await state.ListDeploymentsAsync(cancellationToken))
            .FirstOrDefault(d => (d.Blue == name && d.Status == Teal.Core.Deployments.DeploymentStatus.SwitchoverInProgress)
                || (d.Reversed && d.Standby == name)
                || (d.Green == name && d.Status is not (Teal.Core.Deployments.DeploymentStatus.SwitchoverCompleted or Teal.Core.Deployments.DeploymentStatus.Deleting)));
        if (holding is not null)
        {
            throw new TealException(
                "instance.fence-in-use",
                $"deployment '{holding.Name}' needs the fence on '{name}' (it is {holding.Status})",
                holding.Reversed ? $"it applies green's writes for a switchback: end that with `teal finish {holding.Name}` first" : "wait for its switchover to end, or delete the deployment first") { Kind = TealErrorKind.Conflict };
        }

        var controlPassword = secrets.Read(Teal.Core.Deployments.DeploymentLinks.ControlSecretReference(instance));
        var registered = ConnectionInfo.For(instance, instance.SecretRef is null ? null : secrets.Read(instance.SecretRef));
        var roles = await engines.Engine(instance.Engine).UnfenceAsync(registered, controlPassword, cancellationToken);
        await state.AppendEventAsync(null, EventKinds.InstanceUnfenced, $"instance '{name}' unfenced: LOGIN given back to {roles.Count} role(s)", new Dictionary<string, string> { ["instance"] = name, ["roles"] = string.Join(",", roles) }, cancellationToken);
        return roles;
    }

    /// <summary>
    /// Forgets an instance. Refused while a deployment or an endpoint uses it; a managed one is
    /// stopped and its files deleted, which needs <paramref name="deleteData"/> said out loud.
    /// </summary>
    public async Task RemoveAsync(string name, bool deleteData, CancellationToken cancellationToken)
    {
        var instance = await RequireAsync(name, cancellationToken);
        var deployment = (await state.ListDeploymentsAsync(cancellationToken)).FirstOrDefault(d => d.Blue == name || d.Green == name);
        if (deployment is not null)
        {
            throw new TealException("instance.in-use", $"instance '{name}' belongs to deployment '{deployment.Name}' ({deployment.Id})", $"delete the deployment first (teal delete {deployment.Name})") { Kind = TealErrorKind.Conflict };
        }

        var endpoint = (await state.ListEndpointsAsync(cancellationToken)).FirstOrDefault(e => e.Instance == name || e.CanaryInstance == name);
        if (endpoint is not null)
        {
            throw new TealException("instance.in-use", $"endpoint '{endpoint.Name}' routes to instance '{name}'", $"remove the endpoint first (teal endpoint remove {endpoint.Name})") { Kind = TealErrorKind.Conflict };
        }

        if (instance.Managed is not null && !deleteData)
        {
            throw new TealException("instance.managed", $"instance '{name}' is run by Teal: removing it stops the server and deletes its data in {instance.Managed.Directory}", $"if that is what you want: teal instance remove {name} --delete-data") { Kind = TealErrorKind.Refused };
        }

        if (instance.Managed is null && deleteData)
        {
            throw new TealException("instance.not-managed", $"instance '{name}' is a server you run; Teal never deletes its data", $"remove it without --delete-data: teal instance remove {name}");
        }

        if (instance.Managed is not null && instance.ReaderOf is { } writerName && instance.ReplicationSlot is not null)
        {
            // A reader Teal made streams from a physical slot on its writer: left there, the slot
            // would keep the writer's WAL for good.
            var writer = await state.GetInstanceAsync(writerName, cancellationToken);
            var controlPassword = writer is null ? null : secrets.Read(Teal.Core.Deployments.DeploymentLinks.ControlSecretReference(writer));
            var control = writer is null || controlPassword is null ? null : ConnectionInfo.For(writer, controlPassword) with { User = Teal.Core.Deployments.DeploymentLinks.ControlUser };
            await engines.Provisioner(instance.Engine).RemoveReaderAsync(instance, control, cancellationToken);
            secrets.Remove(Teal.Core.Deployments.DeploymentLinks.ControlSecretReference(instance));
        }
        else if (instance.Managed is not null)
        {
            await engines.Provisioner(instance.Engine).RemoveAsync(instance, cancellationToken);
        }

        await state.RemoveInstanceAsync(name, cancellationToken);
        if (instance.SecretRef is not null)
        {
            secrets.Remove(instance.SecretRef);
        }

        var what = instance.Managed is null ? "forgotten (the server itself is untouched)" : "stopped and its data deleted";
        await state.AppendEventAsync(null, EventKinds.InstanceRemoved, $"instance '{name}' {what}", new Dictionary<string, string> { ["instance"] = name }, cancellationToken);
        LogRemoved(name, instance.Managed is not null);
    }

    /// <summary>Starts every managed instance that is not running (after a restart of the machine).</summary>
    public async Task StartManagedAsync(CancellationToken cancellationToken)
    {
        foreach (var instance in await state.ListInstancesAsync(cancellationToken))
        {
            if (instance.Managed is null)
            {
                continue;
            }

            try
            {
                await engines.Provisioner(instance.Engine).StartAsync(instance, cancellationToken);
            }
            catch (TealException ex)
            {
                LogStartFailed(instance.Name, ex.Message);
            }
        }
    }

    private async Task<(Instance Instance, string? Password)> RegisterAsync(AddInstanceRequest request, string text, CancellationToken cancellationToken)
    {
        var engine = engines.Engine(request.Engine);
        var connection = engine.ParseConnection(text).WithPassword(request.Password);
        var probe = await engine.ProbeAsync(connection, cancellationToken);
        var instance = new Instance(request.Name, request.Engine)
        {
            Version = probe.Version,
            Host = connection.Host,
            Port = connection.Port,
            User = connection.User,
            Database = connection.Database,
            Options = connection.Options,
            // A standby cannot be blue; registering it as a reader says so.
            Role = probe.InRecovery ? InstanceRole.Reader : InstanceRole.Writer,
            CreatedAt = time.GetUtcNow(),
        };
        return (instance, connection.Password);
    }

    private async Task<(Instance Instance, string? Password)> CreateManagedAsync(AddInstanceRequest request, string version, CancellationToken cancellationToken)
    {
        if (request.Password is not null)
        {
            throw new TealException("instance.password-without-connection", "a password goes with --connection; a managed instance gets a generated one", "leave out the password options, or register an existing server with --connection");
        }

        ServerParameters.Validate(request.Parameters, "--parameter", engines.Engine(request.Engine).SettingNamesHint);
        var provisioned = await engines.Provisioner(request.Engine).CreateAsync(
            new ManagedInstanceRequest(request.Name, version, Path.Combine(options.InstancesDirectory, request.Name))
            {
                Port = request.Port,
                Parameters = request.Parameters,
            },
            cancellationToken);
        return (provisioned.Instance, provisioned.Password);
    }

    private async Task DiscardAsync(Instance instance)
    {
        if (instance.SecretRef is not null)
        {
            secrets.Remove(instance.SecretRef);
        }

        if (instance.Managed is not null)
        {
            try
            {
                await engines.Provisioner(instance.Engine).RemoveAsync(instance, CancellationToken.None);
            }
            catch (Exception ex) when (ex is TealException or IOException)
            {
                LogDiscardFailed(ex, instance.Name, instance.Managed.Directory);
            }
        }
    }

    private async Task<Instance> RequireAsync(string name, CancellationToken cancellationToken) =>
        await state.GetInstanceAsync(name, cancellationToken)
        ?? throw new TealException("instance.not-found", $"no instance named '{name}'", "see `teal instance list`") { Kind = TealErrorKind.NotFound };


    [LoggerMessage(EventId = 2100, Level = LogLevel.Information, Message = "Instance {Name} {How} at {Address}")]
    private partial void LogAdded(string name, string how, string address);

    [LoggerMessage(EventId = 2101, Level = LogLevel.Information, Message = "Instance {Name} removed (managed: {Managed})")]
    private partial void LogRemoved(string name, bool managed);

    [LoggerMessage(EventId = 2102, Level = LogLevel.Warning, Message = "Managed instance {Name} did not start: {Reason}")]
    private partial void LogStartFailed(string name, string reason);

    [LoggerMessage(EventId = 2103, Level = LogLevel.Error, Message = "Could not remove managed instance {Name} in {Directory} after a failed add; remove it by hand")]
    private partial void LogDiscardFailed(Exception exception, string name, string directory);
}
