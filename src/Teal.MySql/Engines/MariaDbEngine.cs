using Teal.Core.Engines;
using Teal.Core.Instances;
using Teal.MySql.Connections;
using Teal.MySql.Replication;

namespace Teal.MySql.Engines;

/// <summary>The MariaDB engine: probes servers, parses connection strings and opens deployments' replication links.</summary>
public sealed class MariaDbEngine(MariaDbEngineCatalog catalog, TimeProvider time) : IEngine
{
    public EngineKind Kind => EngineKind.MariaDb;

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
}
