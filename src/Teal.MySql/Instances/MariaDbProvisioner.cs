using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Core.Instances;
using Teal.MySql.Connections;
using Teal.MySql.Engines;

namespace Teal.MySql.Instances;

/// <summary>Managed MariaDB instances for Teal's instance registry (on top of <see cref="ManagedMariaDb"/>).</summary>
public sealed class MariaDbProvisioner(MariaDbEngineCatalog catalog, TimeProvider time) : IInstanceProvisioner
{
    private readonly ManagedMariaDb _managed = new(catalog);

    public EngineKind Kind => EngineKind.MariaDb;

    public async Task<ProvisionedInstance> CreateAsync(ManagedInstanceRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var password = ManagedMariaDb.GeneratePassword();
        var server = await _managed.CreateAsync(
            new ManagedMariaDbSpec(request.Directory, request.Version, password)
            {
                Port = request.Port,
                ListenAddress = request.ListenAddress,
                Parameters = request.Parameters,
            },
            cancellationToken);

        var instance = new Instance(request.Name, EngineKind.MariaDb)
        {
            Version = server.Version,
            Host = server.ListenAddress is "0.0.0.0" or "*" or "::" ? "127.0.0.1" : server.ListenAddress,
            Port = server.Port,
            User = server.User,
            // MariaDB's always-present database is `mysql`. A deployment's green keeps blue's
            // database name: the copy creates it.
            Database = request.Database ?? MySqlConnectionStrings.DefaultDatabase,
            Managed = new ManagedInstanceSpec(server.Directory, server.Version) { Parameters = request.Parameters, OsUser = server.OsUser },
            CreatedAt = time.GetUtcNow(),
        };
        return new ProvisionedInstance(instance, password);
    }

    /// <summary>Starts the server unless it runs already (managed servers outlive a restart of Teal).</summary>
    public async Task StartAsync(Instance instance, CancellationToken cancellationToken)
    {
        var server = await LoadAsync(instance, cancellationToken);
        if (!await ManagedMariaDb.IsRunningAsync(server, cancellationToken))
        {
            await _managed.StartAsync(server, cancellationToken);
        }
    }

    public async Task StopAsync(Instance instance, CancellationToken cancellationToken) =>
        await ManagedMariaDb.StopAsync(await LoadAsync(instance, cancellationToken), immediate: false, cancellationToken);

    public async Task RemoveAsync(Instance instance, CancellationToken cancellationToken) =>
        await ManagedMariaDb.RemoveAsync(await LoadAsync(instance, cancellationToken), cancellationToken);

    public Task<IReadOnlyList<EngineBinaries>> ListEnginesAsync(CancellationToken cancellationToken) => catalog.ListAsync(cancellationToken);

    private static Task<ManagedMariaDbServer> LoadAsync(Instance instance, CancellationToken cancellationToken)
    {
        var directory = instance.Managed?.Directory
            ?? throw new TealException("instance.not-managed", $"instance '{instance.Name}' is not managed by Teal", "only instances made with `teal instance create` can be started, stopped or removed by Teal");
        return ManagedMariaDb.LoadAsync(directory, cancellationToken);
    }
}
