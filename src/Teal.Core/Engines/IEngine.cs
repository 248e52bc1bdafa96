using Teal.Core.Errors;
using Teal.Core.Guardrails;
using Teal.Core.Instances;

namespace Teal.Core.Engines;

/// <summary>
/// One database family (PostgreSQL; MariaDB, with MySQL 8 to come). Everything engine-specific goes
/// through this interface and <see cref="IReplicationLink"/>, so the deployment workflow, the
/// guardrails and the switchover plan are written once.
/// </summary>
public interface IEngine
{
    EngineKind Kind { get; }

    /// <summary>The scheme of the connection URIs <c>teal instance url</c> prints (<c>postgresql</c>, <c>mysql</c>).</summary>
    string UriScheme { get; }

    /// <summary>
    /// How this engine spells its setting names, for the hint when a <c>--parameter</c> name is
    /// refused (PostgreSQL: as SHOW and pg_settings do, e.g. work_mem).
    /// </summary>
    string SettingNamesHint { get; }

    /// <summary>
    /// Connects and reads what Teal needs to know about a server. Unreachable servers and bad
    /// credentials are <see cref="Errors.TealException"/>s whose message never holds the password.
    /// </summary>
    Task<InstanceProbe> ProbeAsync(ConnectionInfo connection, CancellationToken cancellationToken);

    /// <summary>
    /// Parses a connection string as operators write them for this engine (URI or key=value).
    /// Refusals never echo the text, which may hold a password.
    /// </summary>
    ConnectionInfo ParseConnection(string text);

    /// <summary>The replication link of one deployment (cheap; holds no connection until used).</summary>
    IReplicationLink Link(LinkSpec spec);

    /// <summary>
    /// Lifts every deployment's fence from a server (the explicit <c>teal instance unfence</c>):
    /// gives back exactly what the fences took (PostgreSQL: LOGIN of the recorded roles; MariaDB:
    /// the accounts locked, read_only). Returns the roles or accounts given back.
    /// </summary>
    /// <param name="registered">The server as registered with Teal (its password included).</param>
    /// <param name="controlPassword">The password of Teal's own login role on that server, for
    /// engines whose fence leaves only that role able to log in; null when Teal never made one.</param>
    /// <param name="cancellationToken">Cancels the unfence.</param>
    Task<IReadOnlyList<string>> UnfenceAsync(ConnectionInfo registered, string? controlPassword, CancellationToken cancellationToken);

    /// <summary>
    /// Gives Teal's own login on a server <paramref name="newPassword"/>, logged in as that login
    /// (<paramref name="control"/>, with the current password: it is the one a fenced server
    /// admits). The password reaches no log.
    /// </summary>
    Task ChangeControlPasswordAsync(ConnectionInfo control, string newPassword, CancellationToken cancellationToken) =>
        throw new TealException("instance.rotate-unsupported", $"Teal cannot rotate its login's password on {control?.Address} for this engine yet", null) { Kind = TealErrorKind.Refused };

    /// <summary>
    /// The create prerequisites that need only blue and the plan for a managed green, run before
    /// green is provisioned so that a refusal builds nothing: blue's settings, privileges and
    /// tables, the client tools Teal runs against blue's version, and binaries of green's version
    /// that are not older than blue. Reads only.
    /// </summary>
    Task<CheckReport> CheckBeforeGreenAsync(GreenPlan plan, CancellationToken cancellationToken);
}

/// <summary>What <see cref="IEngine.CheckBeforeGreenAsync"/> checks: blue, and the green about to be built.</summary>
/// <param name="Name">Stem of Teal's objects (as in <see cref="LinkSpec.Name"/>).</param>
/// <param name="Blue">Blue's writer, in the deployment's database.</param>
/// <param name="GreenVersion">Engine version of the managed green ("17", "17.10").</param>
public sealed record GreenPlan(string Name, ConnectionInfo Blue, string GreenVersion)
{
    /// <summary>Restrict replication to these tables (schema.table); empty means all tables.</summary>
    public IReadOnlyList<string> Tables { get; init; } = [];

    /// <summary>Whether blue's roles will be copied (then a role dump tool is needed too).</summary>
    public bool CopyRoles { get; init; }

    /// <summary>Logical slots on blue that CDC consumers read (each must exist there and be logical).</summary>
    public IReadOnlyList<string> CdcSlots { get; init; } = [];
}

/// <summary>What a probe found.</summary>
/// <param name="Version">Server version (15.18).</param>
/// <param name="IsSuperuser">Whether the user is a superuser (Teal needs one on managed greens).</param>
public sealed record InstanceProbe(string Version, bool IsSuperuser)
{
    /// <summary>Whether the server is a read-only standby (cannot be blue).</summary>
    public bool InRecovery { get; init; }
}

/// <summary>Everything a link needs to know about a deployment.</summary>
/// <param name="Name">Stem for Teal's objects on both sides (<c>teal_</c> + the id's hex digits).</param>
/// <param name="Blue">Blue's writer, in the deployment's database.</param>
/// <param name="Green">Green's writer, in the deployment's database.</param>
public sealed record LinkSpec(string Name, ConnectionInfo Blue, ConnectionInfo Green)
{
    /// <summary>Restrict replication to these tables (schema.table); empty means all tables.</summary>
    public IReadOnlyList<string> Tables { get; init; } = [];

    /// <summary>
    /// The link of a switchback: its green is the old blue, reopened. Nothing was copied to it, so
    /// the checks about the initial copy (green's statistics) do not apply.
    /// </summary>
    public bool Reversed { get; init; }

    /// <summary>
    /// Whether Teal provisioned green's server (its data directory and configuration files are
    /// Teal's). On a forward link that green is new and empty; on a <see cref="Reversed"/> link it
    /// is the old blue.
    /// </summary>
    public bool GreenManaged { get; init; }

    /// <summary>Whether Teal provisioned blue's server (see <see cref="GreenManaged"/>); on a <see cref="Reversed"/> link, production's.</summary>
    public bool BlueManaged { get; init; }

    /// <summary>Copy blue's roles (without the connecting users) to green before the schema.</summary>
    public bool CopyRoles { get; init; }

    /// <summary>The engine version green must run (verify reports it), e.g. "17"; null skips the check.</summary>
    public string? ExpectedGreenVersion { get; init; }

    /// <summary>Parameter values green must have (the deployment's parameter group); verify compares them.</summary>
    public IReadOnlyDictionary<string, string> ExpectedGreenParameters { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// Password of Teal's own login role on blue (the fence leaves only that role able to log
    /// in, so it must be one no application knows). Generated and kept by Teal per server.
    /// </summary>
    public string? BlueControlPassword { get; init; }

    /// <summary>Password of Teal's own login role on green (see <see cref="BlueControlPassword"/>).</summary>
    public string? GreenControlPassword { get; init; }

    /// <summary>A switchover over this link starts replication back from green to blue (the switchover guardrails check green can publish).</summary>
    public bool ReverseReplication { get; init; }

    /// <summary>
    /// Logical slots on blue that change-data-capture consumers read; a cutover creates slots of
    /// the same names and plugins on green before green takes a write.
    /// </summary>
    public IReadOnlyList<string> CdcSlots { get; init; } = [];

    /// <summary>
    /// Sessions of the initial copy. 1 keeps the engine's own copy (PostgreSQL: the
    /// subscription's <c>copy_data</c>, one stream per table); more copies large tables in
    /// key ranges over that many sessions sharing one snapshot, where the engine can.
    /// </summary>
    public int CopyParallelism { get; init; } = 1;
}
