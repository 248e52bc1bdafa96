using System.Globalization;
using MySqlConnector;
using Teal.Core.Engines;
using Teal.Core.Guardrails;
using Teal.MySql.Connections;
using Teal.MySql.Engines;

namespace Teal.MySql.Replication;

/// <summary>
/// Every create prerequisite (PRODUCT.md §4, MariaDB): all run, all reported, each failure with
/// its exact fix; nothing is changed on either side.
/// </summary>
internal sealed class PrerequisiteChecks(LinkSessions sessions)
{
    /// <summary>Assumed copy rate, to judge whether binlog retention outlasts the copy.</summary>
    private const double CopyBytesPerSecond = 20 * 1024 * 1024;

    public async Task<CheckReport> RunAsync(CancellationToken cancellationToken)
    {
        var results = new List<CheckResult>();
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);

        var blueVersion = await Sql.StringAsync(blue, "SELECT VERSION()", cancellationToken) ?? string.Empty;
        var greenVersion = await Sql.StringAsync(green, "SELECT VERSION()", cancellationToken) ?? string.Empty;
        results.Add(Flavor("blue-engine", blueVersion));
        results.Add(Flavor("green-engine", greenVersion));
        results.Add(Version.Parse(ServerFlavor.Number(greenVersion)) >= Version.Parse(ServerFlavor.Number(blueVersion))
            ? CheckResult.Pass("green-version", $"green runs {ServerFlavor.Number(greenVersion)}, blue {ServerFlavor.Number(blueVersion)}")
            : CheckResult.Fail("green-version", $"green runs {ServerFlavor.Number(greenVersion)}, older than blue's {ServerFlavor.Number(blueVersion)}", "replication only goes to the same or a newer version: choose a newer --target-engine-version"));

        results.Add(await PrivilegesAsync("green-privileges", green, cancellationToken));
        results.AddRange(await BlueAsync(blue, sessions.Schema, cancellationToken));
        results.Add(await ServerIdsAsync(blue, green, cancellationToken));
        results.Add(await GtidAsync(blue, green, cancellationToken));
        results.Add(await NotAReplicaAsync("green-not-replica", "green", green, cancellationToken));
        results.Add(await GreenEmptyAsync(green, cancellationToken));
        results.Add(await SettingAsync(green, "local_infile", "ON", "green-local-infile", "the copy loads rows with LOAD DATA LOCAL", "SET GLOBAL local_infile = ON; on green (and local-infile=ON in its settings)", cancellationToken));
        var greenLogBin = await Sql.VariableAsync(green, "log_bin", cancellationToken);
        results.Add(greenLogBin == "ON"
            ? CheckResult.Pass("green-log-bin", "green writes a binlog (it is the source for consumers after switchover)")
            : CheckResult.Warn("green-log-bin", "green has no binlog: after switchover nothing can replicate from it and no binlog coordinates can be reported", "add log-bin=binlog to green's [mariadbd] settings and restart it"));
        results.Add(sessions.Spec.Tables.Count == 0
            ? CheckResult.Pass("table-filter", "all user databases are copied and replicated")
            : CheckResult.Fail("table-filter", "a table filter is not supported for MariaDB yet: Teal copies and replicates every user database", "create the deployment without --table"));
        return new CheckReport(results);
    }

    /// <summary>
    /// The checks that need only blue: run again before a managed green is built (so a refusal
    /// builds nothing) and as part of <see cref="RunAsync"/>.
    /// </summary>
    public static async Task<List<CheckResult>> BlueAsync(MySqlConnection blue, string ownSchema, CancellationToken cancellationToken)
    {
        var tables = await TealObjects.TablesAsync(blue, await TealObjects.UserSchemasAsync(blue, ownSchema, cancellationToken), cancellationToken);
        return
        [
            await PrivilegesAsync("blue-privileges", blue, cancellationToken),
            await SettingAsync(blue, "log_bin", "ON", "blue-log-bin", "binary logging is what green replicates from", "add log-bin=binlog to blue's [mariadbd] settings and restart it", cancellationToken),
            await SettingAsync(blue, "binlog_format", "ROW", "blue-binlog-format", "row events replicate exactly what changed", "SET GLOBAL binlog_format = 'ROW'; and binlog-format=ROW in blue's [mariadbd] settings (sessions opened before keep the old format)", cancellationToken),
            await SettingAsync(blue, "binlog_row_image", "FULL", "blue-binlog-row-image", "full row images let green find rows by every column", "SET GLOBAL binlog_row_image = 'FULL'; and binlog-row-image=FULL in blue's [mariadbd] settings", cancellationToken),
            await RetentionAsync(blue, tables.Sum(t => t.DataBytes), cancellationToken),
            PrimaryKeys(tables),
            Engines(tables),
            await NotAReplicaAsync("blue-not-replica", "blue", blue, cancellationToken),
        ];
    }

    /// <summary>Checks one server's version string: MariaDB 10.5 or newer (MySQL is refused with what differs).</summary>
    internal static CheckResult Flavor(string name, string version)
    {
        var flavor = ServerFlavor.FromVersion(version);
        if (flavor.Unsupported is { } why)
        {
            return CheckResult.Fail(name, why, "use MariaDB 10.5 or newer on both sides");
        }

        return Version.Parse(ServerFlavor.Number(version)) >= new Version(10, 5)
            ? CheckResult.Pass(name, $"MariaDB {ServerFlavor.Number(version)}")
            : CheckResult.Fail(name, $"MariaDB {ServerFlavor.Number(version)} is older than 10.5 (no READ ONLY ADMIN, no BINLOG_GTID_POS of a snapshot)", "upgrade it in place to 10.5 or newer first");
    }

    private static async Task<CheckResult> PrivilegesAsync(string name, MySqlConnection connection, CancellationToken cancellationToken)
    {
        var have = await Privileges.OfCurrentUserAsync(connection, cancellationToken);
        var missing = Privileges.Required.Where(p => !have.Contains(p)).ToList();
        var user = await Sql.StringAsync(connection, "SELECT CURRENT_USER()", cancellationToken);
        return missing.Count == 0
            ? CheckResult.Pass(name, $"{user} has the privileges Teal needs")
            : CheckResult.Fail(name, $"{user} lacks {string.Join(", ", missing)}", $"GRANT ALL PRIVILEGES ON *.* TO {user} WITH GRANT OPTION; (Teal writes through the fence, locks and unlocks accounts, and sets up replication)");
    }

    private static async Task<CheckResult> SettingAsync(MySqlConnection connection, string variable, string expected, string name, string why, string hint, CancellationToken cancellationToken)
    {
        var value = await Sql.VariableAsync(connection, variable, cancellationToken) ?? "(not set)";
        return string.Equals(value, expected, StringComparison.OrdinalIgnoreCase)
            ? CheckResult.Pass(name, $"{variable} = {value}")
            : CheckResult.Fail(name, $"{variable} is {value}, must be {expected}: {why}", hint);
    }

    private static async Task<CheckResult> ServerIdsAsync(MySqlConnection blue, MySqlConnection green, CancellationToken cancellationToken)
    {
        var blueId = await Sql.VariableAsync(blue, "server_id", cancellationToken);
        var greenId = await Sql.VariableAsync(green, "server_id", cancellationToken);
        if (blueId == "0" || greenId == "0")
        {
            return CheckResult.Fail("server-id", "server_id is 0 on " + (blueId == "0" ? "blue" : "green") + ": such a server neither replicates nor is replicated from", "set server-id to a unique non-zero number in its [mariadbd] settings and restart it");
        }

        return blueId != greenId
            ? CheckResult.Pass("server-id", $"server_id: blue {blueId}, green {greenId}")
            : CheckResult.Fail("server-id", $"blue and green both have server_id {blueId}: green would ignore blue's events as its own", "give green another server-id in its [mariadbd] settings and restart it");
    }

    private static async Task<CheckResult> GtidAsync(MySqlConnection blue, MySqlConnection green, CancellationToken cancellationToken)
    {
        var problems = new List<string>();
        var position = await Sql.StringAsync(blue, "SELECT @@global.gtid_binlog_pos", cancellationToken);
        var greenStrict = await Sql.VariableAsync(green, "gtid_strict_mode", cancellationToken);
        var blueDomain = await Sql.VariableAsync(blue, "gtid_domain_id", cancellationToken);
        var greenDomain = await Sql.VariableAsync(green, "gtid_domain_id", cancellationToken);
        if (blueDomain != greenDomain)
        {
            problems.Add($"gtid_domain_id differs (blue {blueDomain}, green {greenDomain}): green's own writes after switchover would open a second domain that consumers of blue do not know");
        }

        if (problems.Count > 0)
        {
            return CheckResult.Fail("gtid", string.Join("; ", problems), "SET GLOBAL gtid_domain_id on green to blue's value (and in its settings)");
        }

        return greenStrict == "ON"
            ? CheckResult.Pass("gtid", $"GTID domain {blueDomain}; blue is at '{position}'; green enforces gtid_strict_mode")
            : CheckResult.Warn("gtid", $"GTID domain {blueDomain}; blue is at '{position}'; green does not enforce gtid_strict_mode, so an out-of-order transaction would not stop replication", "SET GLOBAL gtid_strict_mode = ON on green (and gtid-strict-mode=ON in its settings)");
    }

    private static async Task<CheckResult> RetentionAsync(MySqlConnection blue, long dataBytes, CancellationToken cancellationToken)
    {
        // MariaDB 10.6+ has binlog_expire_logs_seconds; expire_logs_days is its older spelling. 0 keeps binlogs forever.
        var seconds = double.TryParse(await Sql.VariableAsync(blue, "binlog_expire_logs_seconds", cancellationToken), NumberStyles.Float, CultureInfo.InvariantCulture, out var s) ? s : 0;
        if (seconds == 0 && double.TryParse(await Sql.VariableAsync(blue, "expire_logs_days", cancellationToken), NumberStyles.Float, CultureInfo.InvariantCulture, out var days))
        {
            seconds = days * 86400;
        }

        // The copy must finish, and green must read the binlog written meanwhile, before blue purges it; keep an hour of margin.
        var needed = (dataBytes / CopyBytesPerSecond) + 3600;
        if (seconds == 0)
        {
            return CheckResult.Pass("binlog-retention", "binlogs are kept until purged by hand");
        }

        return seconds >= needed
            ? CheckResult.Pass("binlog-retention", $"binlogs are kept {seconds / 3600:0.#} h; the copy of {dataBytes / (1024 * 1024)} MiB needs about {needed / 3600:0.#} h")
            : CheckResult.Fail("binlog-retention", $"binlogs are kept only {seconds / 3600:0.#} h; the copy of {dataBytes / (1024 * 1024)} MiB and the catch-up need about {needed / 3600:0.#} h", $"SET GLOBAL binlog_expire_logs_seconds = {Math.Max(86400, (long)needed * 2)}; on blue (and in its settings)");
    }

    private static CheckResult PrimaryKeys(List<TableInfo> tables)
    {
        var offenders = tables.Where(t => !t.HasPrimaryKey).Select(t => t.FullName).ToList();
        return offenders.Count == 0
            ? CheckResult.Pass("primary-keys", $"all {tables.Count} tables have a primary key")
            : CheckResult.Fail("primary-keys", $"{offenders.Count} table(s) without a primary key: {string.Join(", ", offenders.Take(20))}{(offenders.Count > 20 ? ", …" : string.Empty)}", "add a primary key to each (ALTER TABLE … ADD PRIMARY KEY (…)); green finds rows of row events by it, and verify chunks by it");
    }

    private static CheckResult Engines(List<TableInfo> tables)
    {
        var offenders = tables.Where(t => !t.IsTransactional).Select(t => $"{t.FullName} ({t.Engine})").ToList();
        return offenders.Count == 0
            ? CheckResult.Pass("storage-engines", "every table is InnoDB")
            : CheckResult.Fail("storage-engines", $"{offenders.Count} table(s) on a non-transactional engine: {string.Join(", ", offenders.Take(20))}{(offenders.Count > 20 ? ", …" : string.Empty)}", "convert them (ALTER TABLE … ENGINE=InnoDB): their rows are not part of a consistent snapshot, and a fence cannot drain writes to them");
    }

    private static async Task<CheckResult> NotAReplicaAsync(string name, string side, MySqlConnection connection, CancellationToken cancellationToken)
    {
        var replicas = await ReplicaStatus.ReadAllAsync(connection, cancellationToken);
        return replicas.Count == 0
            ? CheckResult.Pass(name, $"{side} replicates from no other server")
            : CheckResult.Fail(name, $"{side} is a replica of {string.Join(", ", replicas.Select(r => $"{r.MasterHost}:{r.MasterPort}" + (r.ConnectionName.Length > 0 ? $" ('{r.ConnectionName}')" : string.Empty)))}", $"STOP SLAVE; RESET SLAVE ALL; on {side} if that replication is no longer needed, or use its source as blue");
    }

    private async Task<CheckResult> GreenEmptyAsync(MySqlConnection green, CancellationToken cancellationToken)
    {
        var schemas = (await TealObjects.UserSchemasAsync(green, sessions.Schema, cancellationToken)).Where(s => s != sessions.Schema).ToList();
        return schemas.Count == 0
            ? CheckResult.Pass("green-empty", "green has no user databases")
            : CheckResult.Fail("green-empty", $"green already holds database(s) {string.Join(", ", schemas)}", "give Teal an empty server as green, or drop them there");
    }
}
