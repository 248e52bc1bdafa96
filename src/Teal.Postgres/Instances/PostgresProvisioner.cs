using Teal.Core.Engines;
using Teal.Core.Instances;
using Teal.Postgres.Engines;

namespace Teal.Postgres.Instances;

/// <summary>Managed PostgreSQL instances for Teal's instance registry (on top of <see cref="ManagedPostgres"/>).</summary>
public sealed class PostgresProvisioner(PostgresEngineCatalog catalog, TimeProvider time) : IInstanceProvisioner
{
    /// <summary>What initdb makes: the bootstrap superuser and the maintenance database, both <c>postgres</c>.</summary>
    public const string DefaultSuperUser = "postgres";

    /// <inheritdoc cref="DefaultSuperUser"/>
    public const string DefaultDatabase = "postgres";

    private readonly ManagedPostgres _managed = new(catalog);

    public EngineKind Kind => EngineKind.Postgres;

    public bool CreatesReaders => true;

    public async Task<ProvisionedInstance> CreateAsync(ManagedInstanceRequest request, CancellationToken cancellationToken)
    {
        var password = request.Password ?? ManagedPostgres.GeneratePassword();
        var server = await _managed.CreateAsync(
            new ManagedPostgresSpec(request.Directory, request.Version, password)
            {
                SuperUser = request.SuperUser ?? DefaultSuperUser,
                Port = request.Port,
                ListenAddress = request.ListenAddress,
                Parameters = request.Parameters,
            },
            cancellationToken);

        var instance = new Instance(request.Name, EngineKind.Postgres)
        {
            Version = server.Version,
            Host = server.ListenAddress == "0.0.0.0" || server.ListenAddress == "*" ? "127.0.0.1" : server.ListenAddress,
            Port = server.Port,
            User = server.SuperUser,
            Database = request.Database ?? DefaultDatabase,
            Managed = new ManagedInstanceSpec(server.Directory, server.Version) { Parameters = request.Parameters, OsUser = server.OsUser },
            CreatedAt = time.GetUtcNow(),
        };
        return new ProvisionedInstance(instance, password);
    }

    /// <summary>Starts the server unless it runs already (managed servers outlive a restart of Teal).</summary>
    public async Task StartAsync(Instance instance, CancellationToken cancellationToken)
    {
        var server = await LoadAsync(instance, cancellationToken);
        if (!await _managed.IsRunningAsync(server, cancellationToken))
        {
            await _managed.StartAsync(server, cancellationToken);
        }
    }

    public async Task StopAsync(Instance instance, CancellationToken cancellationToken) =>
        await _managed.StopAsync(await LoadAsync(instance, cancellationToken), immediate: false, cancellationToken);

    public async Task RemoveAsync(Instance instance, CancellationToken cancellationToken) =>
        await _managed.RemoveAsync(await LoadAsync(instance, cancellationToken), cancellationToken);

    public async Task<ProvisionedInstance> CreateReaderAsync(ReaderRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var primary = await LoadAsync(request.Primary, cancellationToken);
        var parameters = request.Primary.Managed?.Parameters ?? new Dictionary<string, string>();
        var server = await _managed.CreateReplicaAsync(primary, new ReplicaSpec(request.Directory, request.PrimaryControl, request.Slot, parameters), cancellationToken);
        var reader = request.Primary with
        {
            Name = request.Name,
            Port = server.Port,
            Role = InstanceRole.Reader,
            ReaderOf = request.Primary.Name,
            ReplicationSlot = request.Slot,
            SecretRef = null,
            Managed = new ManagedInstanceSpec(server.Directory, server.Version) { Parameters = parameters, OsUser = server.OsUser },
            CreatedAt = time.GetUtcNow(),
        };
        // A physical copy: the reader's roles and passwords are the writer's.
        return new ProvisionedInstance(reader, request.PrimaryPassword);
    }

    public async Task SetReaderControlPasswordAsync(Instance reader, ConnectionInfo primaryControl, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(reader);
        await _managed.SetReplicaPasswordAsync(await LoadAsync(reader, cancellationToken), primaryControl, cancellationToken);
    }

    public async Task RemoveReaderAsync(Instance reader, ConnectionInfo? primary, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(reader);
        await RemoveAsync(reader, cancellationToken);
        if (primary is not null && reader.ReplicationSlot is { } slot)
        {
            await ManagedPostgres.DropSlotAsync(primary, slot, cancellationToken);
        }
    }

    public Task<IReadOnlyList<EngineBinaries>> ListEnginesAsync(CancellationToken cancellationToken) => catalog.ListAsync(cancellationToken);

    private static Task<ManagedPostgresServer> LoadAsync(Instance instance, CancellationToken cancellationToken)
    {
        var directory = instance.Managed?.Directory
            ?? throw new Teal.Core.Errors.TealException("instance.not-managed", $"instance '{instance.Name}' is not managed by Teal", "only instances made with `teal instance create` can be started, stopped or removed by Teal");
        return ManagedPostgres.LoadAsync(directory, cancellationToken);
    }
}
