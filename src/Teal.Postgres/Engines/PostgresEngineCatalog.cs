using System.Text.RegularExpressions;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Core.Instances;
using Teal.Processes;

namespace Teal.Postgres.Engines;

/// <summary>
/// Finds PostgreSQL server binaries by version: Debian's <c>/usr/lib/postgresql/N/bin</c> and
/// Teal's engines directory (<c>postgres-17.10/bin</c>). Client tools (pg_dump, psql) come from
/// the newest Debian installation, because the npm server packages ship without them.
/// </summary>
public sealed partial class PostgresEngineCatalog(PostgresEngineOptions options)
{
    private readonly BinaryVersions _versions = new(VersionPattern());

    public PostgresEngineOptions Options => options;

    /// <summary>Every PostgreSQL installation found, newest first.</summary>
    public async Task<IReadOnlyList<EngineBinaries>> ListAsync(CancellationToken cancellationToken)
    {
        var found = new List<EngineBinaries>();
        foreach (var (bin, source) in CandidateBinDirectories())
        {
            var version = await _versions.ReadAsync(Path.Combine(bin, "postgres"), cancellationToken);
            if (version is not null)
            {
                found.Add(new EngineBinaries(EngineKind.Postgres, version, bin, source));
            }
        }

        return found
            .OrderByDescending(e => Version.Parse(Normalize(e.Version)))
            .ThenBy(e => e.Source == "debian" ? 0 : 1)
            .ToList();
    }

    /// <summary>The newest installation matching <paramref name="requested"/> ("17" or "17.10").</summary>
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
            $"no PostgreSQL {requested} binaries on this machine (found: {have})",
            $"install it with scripts/setup.sh, or put its bin/ under {options.EnginesDirectory}/postgres-{requested}/")
        { Kind = TealErrorKind.Invalid };
    }

    /// <summary>
    /// Directory with pg_dump and psql. pg_dump must be at least as new as the server it dumps,
    /// so the newest one is returned.
    /// </summary>
    public async Task<EngineBinaries> ClientToolsAsync(CancellationToken cancellationToken)
    {
        foreach (var e in await ListAsync(cancellationToken))
        {
            if (File.Exists(Path.Combine(e.BinDirectory, "pg_dump")) && File.Exists(Path.Combine(e.BinDirectory, "psql")))
            {
                return e;
            }
        }

        throw new TealException(
            "engine.no-client-tools",
            "pg_dump and psql were not found",
            "install postgresql-client-15 (scripts/setup.sh does)");
    }

    private IEnumerable<(string Bin, string Source)> CandidateBinDirectories()
    {
        if (Directory.Exists(options.DebianRoot))
        {
            foreach (var dir in Directory.EnumerateDirectories(options.DebianRoot))
            {
                yield return (Path.Combine(dir, "bin"), "debian");
            }
        }

        if (Directory.Exists(options.EnginesDirectory))
        {
            foreach (var dir in Directory.EnumerateDirectories(options.EnginesDirectory, "postgres-*"))
            {
                yield return (Path.Combine(dir, "bin"), "teal");
            }
        }
    }

    private static string Normalize(string version) => version.Contains('.', StringComparison.Ordinal) ? version : version + ".0";

    [GeneratedRegex(@"\(PostgreSQL\)\s+(\d+(?:\.\d+)?)")]
    private static partial Regex VersionPattern();
}
