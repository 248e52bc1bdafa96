namespace Teal.Core.Instances;

public enum EngineKind
{
    Postgres,
    MariaDb,
}

public static class EngineKinds
{
    /// <summary>The engine's name as its users write it, for messages and events.</summary>
    public static string DisplayName(this EngineKind kind) => kind switch
    {
        EngineKind.Postgres => "PostgreSQL",
        EngineKind.MariaDb => "MariaDB",
        _ => kind.ToString(),
    };
}

public enum InstanceRole
{
    Writer,
    Reader,
}

/// <summary>
/// One database server Teal knows: registered (external) or created and run by Teal (managed).
/// Holds no password: <see cref="SecretRef"/> names the entry in the secrets file, which keeps
/// its key when the instance is renamed at switchover.
/// </summary>
public sealed record Instance(string Name, EngineKind Engine)
{
    /// <summary>Server version as the server reports it (for PostgreSQL: <c>15.18</c>).</summary>
    public required string Version { get; init; }

    public required string Host { get; init; }

    public required int Port { get; init; }

    public required string User { get; init; }

    public required string Database { get; init; }

    public InstanceRole Role { get; init; } = InstanceRole.Writer;

    /// <summary>Connection settings other than host, port, user, database and password (sslmode, …).</summary>
    public IReadOnlyDictionary<string, string> Options { get; init; } = new Dictionary<string, string>();

    /// <summary>Key of the password in the secrets store; null when the server needs none.</summary>
    public string? SecretRef { get; init; }

    /// <summary>Present when Teal runs this server itself.</summary>
    public ManagedInstanceSpec? Managed { get; init; }

    /// <summary>A reader: the writer it streams from (by name; renamed with it at switchover).</summary>
    public string? ReaderOf { get; init; }

    /// <summary>A reader Teal made: its physical replication slot on <see cref="ReaderOf"/>.</summary>
    public string? ReplicationSlot { get; init; }

    public DateTimeOffset CreatedAt { get; init; }

    /// <summary>Major version as a number (15 for 15.18, 10.11 → 10 for MariaDB).</summary>
    public int MajorVersion => int.Parse(Version.Split('.', 2)[0], System.Globalization.CultureInfo.InvariantCulture);

    public string Address => $"{Host}:{Port}";
}

/// <summary>How Teal runs a managed instance: where its files are and which settings it was given.</summary>
public sealed record ManagedInstanceSpec(string Directory, string EngineVersion)
{
    public IReadOnlyDictionary<string, string> Parameters { get; init; } = new Dictionary<string, string>();

    /// <summary>OS user the server runs as (PostgreSQL refuses root).</summary>
    public string? OsUser { get; init; }
}
