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
}

/// <summary>A managed server to create.</summary>
/// <param name="Name">Instance name (also the directory name).</param>
/// <param name="Version">Engine version ("17" or "17.10").</param>
/// <param name="Directory">Where its files go.</param>
public sealed record ManagedInstanceRequest(string Name, string Version, string Directory)
{
    public int? Port { get; init; }

    public string ListenAddress { get; init; } = "127.0.0.1";

    public IReadOnlyDictionary<string, string> Parameters { get; init; } = new Dictionary<string, string>();

    public string Database { get; init; } = "postgres";

    /// <summary>The bootstrap superuser's name (PostgreSQL: initdb -U).</summary>
    public string SuperUser { get; init; } = "postgres";

    /// <summary>The bootstrap superuser's password; null generates one.</summary>
    public string? Password { get; init; }
}

/// <summary>The created instance and its generated superuser password (for the secrets store).</summary>
public sealed record ProvisionedInstance(Instance Instance, string Password);
