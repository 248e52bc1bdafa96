namespace Teal.MySql.Engines;

/// <summary>Where Teal finds MariaDB binaries besides Debian's, and which OS user runs managed MariaDB servers.</summary>
public sealed record MariaDbEngineOptions
{
    /// <summary>Teal's own engines directory (<c>mariadb-N/bin</c> below it).</summary>
    public string EnginesDirectory { get; init; } = Core.Engines.EnginesDirectory.FromEnvironment();

    /// <summary>
    /// OS user managed servers run as when Teal runs as root (mariadbd refuses root unless told
    /// otherwise, and should not have it). Debian's <c>mysql</c> user by default.
    /// </summary>
    public string OsUser { get; init; } = Environment.GetEnvironmentVariable("TEAL_MYSQL_OS_USER") ?? "mysql";

    /// <summary>The defaults, with <c>TEAL_ENGINES_DIR</c> and <c>TEAL_MYSQL_OS_USER</c> applied.</summary>
    public static MariaDbEngineOptions FromEnvironment() => new();
}
