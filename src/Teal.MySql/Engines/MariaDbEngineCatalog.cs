using System.Text.RegularExpressions;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Core.Instances;
using Teal.Processes;

namespace Teal.MySql.Engines;

/// <summary>
/// Finds MariaDB server binaries by version: Debian's <c>/usr/sbin/mariadbd</c> and Teal's
/// engines directory (<c>mariadb-10.11/bin/mariadbd</c>). The tools around the server
/// (mariadb-install-db, mariadb, mariadb-dump) are looked up beside it, then in <c>/usr/bin</c>.
/// </summary>
public sealed partial class MariaDbEngineCatalog(MariaDbEngineOptions options)
{
    private readonly BinaryVersions _versions = new(VersionPattern());

    public MariaDbEngineOptions Options => options;

    /// <summary>Every MariaDB installation found, newest first.</summary>
    public async Task<IReadOnlyList<EngineBinaries>> ListAsync(CancellationToken cancellationToken)
    {
        var found = new List<EngineBinaries>();
        foreach (var (bin, source) in CandidateBinDirectories())
        {
            var version = await _versions.ReadAsync(Path.Combine(bin, "mariadbd"), cancellationToken);
            if (version is not null)
            {
                found.Add(new EngineBinaries(EngineKind.MariaDb, version, bin, source));
            }
        }

        return found.OrderByDescending(e => Version.Parse(e.Version)).ThenBy(e => e.Source == "debian" ? 0 : 1).ToList();
    }

    /// <summary>The newest installation matching <paramref name="requested"/> ("10", "10.11" or "10.11.19").</summary>
    public async Task<EngineBinaries> ResolveAsync(string requested, CancellationToken cancellationToken)
    {
        var all = await ListAsync(cancellationToken);
        var match = all.FirstOrDefault(e => e.Matches(requested));
        if (match is not null)
        {
            return match;
        }

        var have = all.Count == 0 ? "none" : string.Join(", ", all.Select(e => e.Version).Distinct());
        throw new TealException(
            "engine.unknown-version",
            $"no MariaDB {requested} binaries on this machine (found: {have})",
            $"install mariadb-server (scripts/setup.sh does), or put its bin/ under {options.EnginesDirectory}/mariadb-{requested}/")
        { Kind = TealErrorKind.Invalid };
    }

    /// <summary>A tool of the family (mariadb-install-db, mariadb, mariadb-dump) for these binaries.</summary>
    public static string Tool(EngineBinaries binaries, string name)
    {
        ArgumentNullException.ThrowIfNull(binaries);
        foreach (var dir in new[] { binaries.BinDirectory, Path.Combine(Path.GetDirectoryName(binaries.BinDirectory) ?? "/", "bin"), "/usr/bin" })
        {
            var path = Path.Combine(dir, name);
            if (File.Exists(path))
            {
                return path;
            }
        }

        throw new TealException("engine.missing-tool", $"{name} was not found beside {binaries.BinDirectory} or in /usr/bin", "install mariadb-server and mariadb-client (scripts/setup.sh does)");
    }

    /// <summary>The client tools of the newest installation (mariadb-dump must be at least as new as the server it dumps).</summary>
    public async Task<EngineBinaries> ClientToolsAsync(CancellationToken cancellationToken)
    {
        var all = await ListAsync(cancellationToken);
        return all.Count > 0 ? all[0] : throw new TealException("engine.no-client-tools", "mariadb-dump and mariadb were not found", "install mariadb-client (scripts/setup.sh does)");
    }

    private IEnumerable<(string Bin, string Source)> CandidateBinDirectories()
    {
        yield return ("/usr/sbin", "debian");
        if (Directory.Exists(options.EnginesDirectory))
        {
            foreach (var dir in Directory.EnumerateDirectories(options.EnginesDirectory, "mariadb-*"))
            {
                yield return (Path.Combine(dir, "bin"), "teal");
            }
        }
    }

    [GeneratedRegex(@"Ver\s+(\d+\.\d+\.\d+)-MariaDB")]
    private static partial Regex VersionPattern();
}
