using Teal.Core.Instances;

namespace Teal.Core.Engines;

/// <summary>A set of server binaries Teal found on this machine, for one engine version.</summary>
/// <param name="Engine">Which engine these binaries run.</param>
/// <param name="Version">Full version as the server binary reports it (17.10).</param>
/// <param name="BinDirectory">Directory holding the server programs (postgres, initdb, pg_ctl).</param>
/// <param name="Source">Where they came from: "debian" or "teal" (Teal's engines directory).</param>
public sealed record EngineBinaries(EngineKind Engine, string Version, string BinDirectory, string Source)
{
    public int MajorVersion => int.Parse(Version.Split('.', 2)[0], System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>True when <paramref name="requested"/> ("17", "17.10") names this version.</summary>
    public bool Matches(string requested) =>
        Version == requested || Version.StartsWith(requested + ".", StringComparison.Ordinal);
}
