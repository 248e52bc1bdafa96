using MySqlConnector;
using Teal.MySql.Connections;

namespace Teal.MySql.Replication;

/// <summary>One row of <c>SHOW ALL SLAVES STATUS</c>: a replication connection of this server.</summary>
internal sealed record ReplicaStatus(string ConnectionName, string MasterHost, int MasterPort, string MasterUser)
{
    public bool IoRunning { get; init; }

    public bool SqlRunning { get; init; }

    public string? LastIoError { get; init; }

    public string? LastSqlError { get; init; }

    public long? SecondsBehindMaster { get; init; }

    /// <summary>Blue's binlog file and position green has executed up to.</summary>
    public string? ExecutedFile { get; init; }

    public long ExecutedPosition { get; init; }

    public string? GtidSlavePos { get; init; }

    public string? Error => !string.IsNullOrEmpty(LastSqlError) ? LastSqlError : !string.IsNullOrEmpty(LastIoError) ? LastIoError : null;

    /// <summary>The default (unnamed) replication connection, or null when the server replicates from nowhere.</summary>
    public static async Task<ReplicaStatus?> ReadAsync(MySqlConnection connection, CancellationToken cancellationToken)
    {
        var all = await ReadAllAsync(connection, cancellationToken);
        return all.Count > 0 && all[0].ConnectionName.Length == 0 ? all[0] : null;
    }

    /// <summary>Every replication connection (MariaDB's multi-source replication may have named ones).</summary>
    public static async Task<IReadOnlyList<ReplicaStatus>> ReadAllAsync(MySqlConnection connection, CancellationToken cancellationToken)
    {
        var rows = await Sql.RowsAsync(connection, "SHOW ALL SLAVES STATUS", cancellationToken);
        return rows
            .Select(r => new ReplicaStatus(r.GetValueOrDefault("Connection_name") ?? string.Empty, r.GetValueOrDefault("Master_Host") ?? string.Empty, int.TryParse(r.GetValueOrDefault("Master_Port"), out var port) ? port : 0, r.GetValueOrDefault("Master_User") ?? string.Empty)
            {
                // "Connecting" (and MariaDB's "Preparing") right after START SLAVE is a start, not a
                // failure; a real failure sets Last_IO_Error. Only "No" is a stopped thread.
                IoRunning = r.GetValueOrDefault("Slave_IO_Running") switch
                {
                    "Yes" => true,
                    "No" or null => false,
                    _ => string.IsNullOrEmpty(r.GetValueOrDefault("Last_IO_Error")),
                },
                SqlRunning = r.GetValueOrDefault("Slave_SQL_Running") == "Yes",
                LastIoError = r.GetValueOrDefault("Last_IO_Error"),
                LastSqlError = r.GetValueOrDefault("Last_SQL_Error"),
                SecondsBehindMaster = long.TryParse(r.GetValueOrDefault("Seconds_Behind_Master"), out var s) ? s : null,
                ExecutedFile = r.GetValueOrDefault("Relay_Master_Log_File"),
                ExecutedPosition = long.TryParse(r.GetValueOrDefault("Exec_Master_Log_Pos"), out var p) ? p : 0,
                GtidSlavePos = r.GetValueOrDefault("Gtid_Slave_Pos"),
            })
            .OrderBy(r => r.ConnectionName.Length == 0 ? 0 : 1)
            .ToList();
    }
}
