namespace Teal.Postgres.Engines;

/// <summary>Where Teal finds PostgreSQL binaries and which OS user runs managed PostgreSQL servers.</summary>
public sealed record PostgresEngineOptions
{
    /// <summary>Teal's own engines directory (<c>postgres-N/bin</c> below it).</summary>
    public string EnginesDirectory { get; init; } = Core.Engines.EnginesDirectory.FromEnvironment();

    /// <summary>Debian's PostgreSQL root: one <c>N/bin</c> per installed major version.</summary>
    public string DebianRoot { get; init; } = "/usr/lib/postgresql";

    /// <summary>
    /// OS user managed servers run as when Teal runs as root (PostgreSQL refuses root).
    /// Ignored when Teal runs as another user: servers then run as that user.
    /// </summary>
    public string OsUser { get; init; } = Environment.GetEnvironmentVariable("TEAL_OS_USER") ?? "postgres";

    /// <summary>The defaults, with <c>TEAL_ENGINES_DIR</c> and <c>TEAL_OS_USER</c> applied.</summary>
    public static PostgresEngineOptions FromEnvironment() => new();
}
