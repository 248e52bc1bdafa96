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

    /// <summary>
    /// Takes a password given apart from the connection string (a file, an environment variable
    /// or stdin on the CLI, so that it never sits in a command line); a string that holds a
    /// different one is refused rather than one of them silently winning.
    /// </summary>
    public ConnectionInfo WithPassword(string? password)
    {
        if (password is null)
        {
            return this;
        }

        if (Password is not null && Password != password)
        {
            throw new Errors.TealException(
                "connection.password-twice",
                "the connection string holds a password and another one was given apart from it",
                "give the password once: leave it out of the connection string (a password in a command line is visible to every local user in ps)");
        }

        return this with { Password = password };
    }

    /// <summary>Never prints the password.</summary>
    public override string ToString() => $"{User}@{Host}:{Port}/{Database}";
}
