using Teal.Core.Instances;

namespace Teal.Core.Engines;

/// <summary>Runs managed instances of one engine: creates, starts, stops and removes servers.</summary>
public interface IInstanceProvisioner
{
    EngineKind Kind { get; }

    /// <summary>Creates and starts a server; on failure nothing is left behind.</summary>
    Task<ProvisionedInstance> CreateAsync(ManagedInstanceRequest request, CancellationToken cancellationToken);

    Task StartAsync(Instance instance, CancellationToken cancellationToken);

    Task StopAsync(Instance instance, CancellationToken cancellationToken);

    /// <summary>Stops the server and deletes its files.</summary>
    Task RemoveAsync(Instance instance, CancellationToken cancellationToken);

    /// <summary>Versions this machine can run, newest first.</summary>
    Task<IReadOnlyList<EngineBinaries>> ListEnginesAsync(CancellationToken cancellationToken);

    /// <summary>Whether <see cref="CreateReaderAsync"/> can make readers of this engine's managed servers.</summary>
    bool CreatesReaders => false;

    /// <summary>
    /// Creates and starts a reader of a managed writer: a physical copy streaming from it through
    /// its own replication slot. On failure nothing is left behind (slot included).
    /// </summary>
    Task<ProvisionedInstance> CreateReaderAsync(ReaderRequest request, CancellationToken cancellationToken) =>
        throw new Errors.TealException(
            "instance.readers-unsupported",
            $"Teal cannot create readers of a {Kind.DisplayName()} instance yet ('{request.Primary.Name}')",
            "create the deployment without --target-readers; add readers yourself after the switchover");

    /// <summary>
    /// Gives a reader made by <see cref="CreateReaderAsync"/> the new password of Teal's login on
    /// its writer (<paramref name="primaryControl"/>), which it streams with: its next connection
    /// to the writer logs in with it. The connection it has keeps streaming.
    /// </summary>
    Task SetReaderControlPasswordAsync(Instance reader, ConnectionInfo primaryControl, CancellationToken cancellationToken) =>
        throw new Errors.TealException(
            "instance.rotate-has-readers",
            $"Teal cannot give reader '{reader.Name}' ({Kind.DisplayName()}) a new password to stream with",
            $"remove the reader first (teal instance remove {reader.Name} --delete-data), or keep the password");

    /// <summary>Stops and deletes a reader made by <see cref="CreateReaderAsync"/>, then drops its slot on the writer when the writer is reachable.</summary>
    Task RemoveReaderAsync(Instance reader, ConnectionInfo? primary, CancellationToken cancellationToken) => RemoveAsync(reader, cancellationToken);
}

/// <summary>A reader to create for a managed writer.</summary>
/// <param name="Name">The reader's instance name.</param>
/// <param name="Directory">Where its files go.</param>
/// <param name="Primary">The writer it copies and streams from (managed, on this machine).</param>
/// <param name="PrimaryControl">Teal's own login on the writer (it can take a backup and stream; it is the one login a fence leaves).</param>
/// <param name="Slot">Name of the physical replication slot to create on the writer.</param>
/// <param name="PrimaryPassword">The password of the writer's registered user, which a physical copy shares.</param>
public sealed record ReaderRequest(string Name, string Directory, Instance Primary, ConnectionInfo PrimaryControl, string Slot, string PrimaryPassword);

/// <summary>A managed server to create.</summary>
/// <param name="Name">Instance name (also the directory name).</param>
/// <param name="Version">Engine version ("17" or "17.10").</param>
/// <param name="Directory">Where its files go.</param>
public sealed record ManagedInstanceRequest(string Name, string Version, string Directory)
{
    public int? Port { get; init; }

    public string ListenAddress { get; init; } = "127.0.0.1";

    public IReadOnlyDictionary<string, string> Parameters { get; init; } = new Dictionary<string, string>();

    /// <summary>The database the instance is registered with; null takes the engine's own (PostgreSQL: <c>postgres</c>; MariaDB: <c>mysql</c>).</summary>
    public string? Database { get; init; }

    /// <summary>The bootstrap superuser's name (PostgreSQL: initdb -U); null takes the engine's own.</summary>
    public string? SuperUser { get; init; }

    /// <summary>The bootstrap superuser's password; null generates one.</summary>
    public string? Password { get; init; }
}

/// <summary>The created instance and its generated superuser password (for the secrets store).</summary>
public sealed record ProvisionedInstance(Instance Instance, string Password);
