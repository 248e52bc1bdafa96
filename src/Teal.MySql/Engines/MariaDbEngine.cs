using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Core.Guardrails;
using Teal.Core.Instances;
using Teal.MySql.Connections;
using Teal.MySql.Replication;

namespace Teal.MySql.Engines;

/// <summary>The MariaDB engine: probes servers, parses connection strings and opens deployments' replication links.</summary>
public sealed class MariaDbEngine(MariaDbEngineCatalog catalog, TimeProvider time) : IEngine
{
    public EngineKind Kind => EngineKind.MariaDb;

    public string UriScheme => "mysql";

    public string SettingNamesHint => "use the variable's name as SHOW VARIABLES spells it: letters, digits and underscores (e.g. max_connections, innodb_buffer_pool_size)";

    /// <summary>
    /// Connects once (no pooling) and reads version, whether the account can do what Teal needs
    /// (SUPER, or ALL PRIVILEGES), and whether the server is itself a replica (cannot be blue).
    /// </summary>
    public async Task<InstanceProbe> ProbeAsync(ConnectionInfo connection, CancellationToken cancellationToken)
    {
        await using var dataSource = MySqlConnections.DataSource(connection, pooling: false);
        await using var conn = await MySqlConnections.OpenAsync(dataSource, connection, "server", cancellationToken);
        var version = await Sql.StringAsync(conn, "SELECT VERSION()", cancellationToken) ?? string.Empty;
        var privileges = await Privileges.OfCurrentUserAsync(conn, cancellationToken);
        // Reading replica status needs SUPER or SLAVE MONITOR; an account without them is not
        // one Teal can run a deployment with anyway (the prerequisites say so), so "unknown" is "no".
        var replica = privileges.Contains("SUPER") || privileges.Contains("SLAVE MONITOR") ? await ReplicaStatus.ReadAsync(conn, cancellationToken) : null;
        return new InstanceProbe(ServerFlavor.Number(version), privileges.Contains("SUPER")) { InRecovery = replica is not null };
    }

    public ConnectionInfo ParseConnection(string text) => MySqlConnectionStrings.Parse(text);

    public IReplicationLink Link(LinkSpec spec) => new MySqlReplicationLink(spec, catalog, time);

    /// <summary>
    /// Lifts the fence Teal's deployments left on a server (the explicit <c>teal instance
    /// unfence</c>): unlocks exactly the accounts the fences locked and restores read_only and the
    /// event scheduler, from what the fence recorded on the server. Returns the accounts unlocked.
    /// </summary>
    /// <remarks>Teal's account is the registered one: the fence never locks it.</remarks>
    public async Task<IReadOnlyList<string>> UnfenceAsync(ConnectionInfo registered, string? controlPassword, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(registered);
        await using var dataSource = MySqlConnections.DataSource(registered.WithDatabase(string.Empty), pooling: false);
        await using var conn = await MySqlConnections.OpenAsync(dataSource, registered, "server", cancellationToken);
        return await Fencing.LiftAsync(conn, cancellationToken);
    }

    /// <summary>Blue's own prerequisites and green's binaries, before a managed green is built.</summary>
    public async Task<CheckReport> CheckBeforeGreenAsync(GreenPlan plan, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(plan);
        await using var dataSource = MySqlConnections.DataSource(plan.Blue.WithDatabase(string.Empty), pooling: false);
        await using var blue = await MySqlConnections.OpenAsync(dataSource, plan.Blue, "blue", cancellationToken);
        var blueVersion = await Sql.StringAsync(blue, "SELECT VERSION()", cancellationToken) ?? string.Empty;
        var results = new List<CheckResult> { PrerequisiteChecks.Flavor("blue-engine", blueVersion) };
        results.AddRange(await PrerequisiteChecks.BlueAsync(blue, plan.Name, cancellationToken));
        try
        {
            var green = await catalog.ResolveAsync(plan.GreenVersion, cancellationToken);
            results.Add(Version.Parse(ServerFlavor.Number(green.Version)) >= Version.Parse(ServerFlavor.Number(blueVersion))
                ? CheckResult.Pass("green-version", $"green will run MariaDB {green.Version}, blue runs {ServerFlavor.Number(blueVersion)}")
                : CheckResult.Fail("green-version", $"green would run MariaDB {green.Version}, older than blue's {ServerFlavor.Number(blueVersion)}", "replication only goes to the same or a newer version: choose a newer --target-engine-version"));
        }
        catch (TealException ex)
        {
            results.Add(CheckResult.Fail("green-version", ex.Message, ex.Hint ?? "see `teal engine list`"));
        }

        if (plan.Tables.Count > 0)
        {
            results.Add(CheckResult.Fail("table-filter", "a table filter is not supported for MariaDB yet: Teal copies and replicates every user database", "create the deployment without --table"));
        }

        if (plan.CdcSlots.Count > 0)
        {
            results.Add(CheckResult.Fail("cdc-slots", $"MariaDB has no logical replication slots: {string.Join(", ", plan.CdcSlots)} cannot be carried to green", "create the deployment without --cdc-slot; binlog consumers re-anchor on green with the binary log coordinates of the switchover's positions event"));
        }

        return new CheckReport(results);
    }
}
