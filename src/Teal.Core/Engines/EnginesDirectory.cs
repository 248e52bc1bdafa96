namespace Teal.Core.Engines;

/// <summary>
/// Teal's own engines directory, shared by every engine: scripts/setup.sh unpacks server
/// binaries there (<c>postgres-17.10/</c>, <c>mariadb-10.11/</c>), each engine's catalog looks
/// for its own prefix. What else an engine needs (its OS user, its distribution's paths) is in
/// that engine's options.
/// </summary>
public static class EnginesDirectory
{
    /// <summary><c>TEAL_ENGINES_DIR</c>, else the directory scripts/setup.sh uses.</summary>
    public static string FromEnvironment()
    {
        var fromEnv = Environment.GetEnvironmentVariable("TEAL_ENGINES_DIR");
        if (!string.IsNullOrEmpty(fromEnv))
        {
            return fromEnv;
        }

        // Must match scripts/setup.sh. As root the binaries go outside /root so that the
        // non-root server users can execute them.
        return Environment.UserName == "root"
            ? "/opt/teal/engines"
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".local", "share", "teal", "engines");
    }
}
