using Teal.Core.Instances;

namespace Teal.Core.Engines;

/// <summary>
/// How to reach one server, with its password resolved from the secrets store. Lives in memory
/// only: it is never persisted, logged or returned by the API (<see cref="ToString"/> masks it).
/// </summary>
public sealed record ConnectionInfo(string Host, int Port, string User, string? Password, string Database)
{
    /// <summary>Other settings (sslmode, …) passed through to the driver.</summary>
    public IReadOnlyDictionary<string, string> Options { get; init; } = new Dictionary<string, string>();

    public string Address => $"{Host}:{Port}";

    public static ConnectionInfo For(Instance instance, string? password) =>
        new(instance.Host, instance.Port, instance.User, password, instance.Database) { Options = instance.Options };

    public ConnectionInfo WithDatabase(string database) => this with { Database = database };

    /// <summary>Never prints the password.</summary>
    public override string ToString() => $"{User}@{Host}:{Port}/{Database}";
}
