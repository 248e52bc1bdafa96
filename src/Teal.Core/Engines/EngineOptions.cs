namespace Teal.Core.Engines;

/// <summary>Where Teal looks for engine binaries and which OS user runs managed servers.</summary>
public sealed record EngineOptions
{
    /// <summary>Teal's own engines directory (scripts/setup.sh unpacks PostgreSQL 16/17 there).</summary>
    public string EnginesDirectory { get; init; } = DefaultEnginesDirectory();

    /// <summary>Debian's PostgreSQL root: one <c>N/bin</c> per installed major version.</summary>
    public string DebianPostgresRoot { get; init; } = "/usr/lib/postgresql";

    /// <summary>
    /// OS user managed servers run as when Teal runs as root (PostgreSQL refuses root).
    /// Ignored when Teal runs as another user: servers then run as that user.
    /// </summary>
    public string OsUser { get; init; } = Environment.GetEnvironmentVariable("TEAL_OS_USER") ?? "postgres";

    /// <summary>
    /// OS user managed MariaDB servers run as when Teal runs as root (mariadbd refuses root
    /// unless told otherwise, and should not have it). Debian's <c>mysql</c> user by default.
    /// </summary>
    public string MySqlOsUser { get; init; } = Environment.GetEnvironmentVariable("TEAL_MYSQL_OS_USER") ?? "mysql";

    /// <summary>The defaults, with <c>TEAL_ENGINES_DIR</c>, <c>TEAL_OS_USER</c> and <c>TEAL_MYSQL_OS_USER</c> applied.</summary>
    public static EngineOptions FromEnvironment() => new();

    private static string DefaultEnginesDirectory()
    {
        var fromEnv = Environment.GetEnvironmentVariable("TEAL_ENGINES_DIR");
        if (!string.IsNullOrEmpty(fromEnv))
        {
            return fromEnv;
        }

        // Must match scripts/setup.sh. As root the binaries go outside /root so that the
        // non-root server user can execute them.
        return Environment.UserName == "root"
            ? "/opt/teal/engines"
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".local", "share", "teal", "engines");
    }
}
