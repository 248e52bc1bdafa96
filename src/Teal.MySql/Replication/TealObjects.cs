using MySqlConnector;
using Teal.MySql.Connections;

namespace Teal.MySql.Replication;

/// <summary>
/// What Teal creates on the servers. Per deployment, on blue (and replicated to green): the
/// schema <c>teal_&lt;id&gt;</c> with the heartbeat table. Per server, never replicated: the schema
/// <c>teal</c> with the fence's bookkeeping (accounts Teal locked, settings it changed), which
/// outlives deployments because an old blue stays fenced after its deployment is deleted.
/// </summary>
internal static class TealObjects
{
    /// <summary>Schema of the per-server fence bookkeeping.</summary>
    public const string FenceSchema = "teal";

    /// <summary>Schemas never copied or compared: the server's own and Teal's bookkeeping.</summary>
    public static readonly string[] SystemSchemas = ["mysql", "information_schema", "performance_schema", "sys", FenceSchema];

    public static string Heartbeat(string schema) => Sql.Table(schema, "heartbeat");

    /// <summary>Created on blue before the copy, so green gets it with the copy and replication keeps it current.</summary>
    public static async Task CreateHeartbeatAsync(MySqlConnection blue, string schema, CancellationToken cancellationToken)
    {
        await Sql.ExecuteAsync(blue, $"CREATE DATABASE IF NOT EXISTS {Sql.Id(schema)}", cancellationToken);
        await Sql.ExecuteAsync(blue, $"CREATE TABLE IF NOT EXISTS {Heartbeat(schema)} (id INT PRIMARY KEY, at DATETIME(6) NOT NULL) ENGINE=InnoDB", cancellationToken);
    }

    /// <summary>Fence bookkeeping tables, on an unlogged session.</summary>
    public static Task CreateFenceTablesAsync(MySqlConnection unlogged, CancellationToken cancellationToken) =>
        Sql.ExecuteAsync(unlogged, CreateFenceTablesSql, cancellationToken);

    /// <summary>The statements of <see cref="CreateFenceTablesAsync"/>, for a batch that does more in the same round trip.</summary>
    public static string CreateFenceTablesSql { get; } =
        $"CREATE DATABASE IF NOT EXISTS {Sql.Id(FenceSchema)}; " +
        $"CREATE TABLE IF NOT EXISTS {Sql.Table(FenceSchema, "locked_accounts")} (user VARCHAR(128) NOT NULL, host VARCHAR(255) NOT NULL, PRIMARY KEY (user, host)) ENGINE=InnoDB; " +
        $"CREATE TABLE IF NOT EXISTS {Sql.Table(FenceSchema, "settings")} (name VARCHAR(64) PRIMARY KEY, value VARCHAR(255) NOT NULL) ENGINE=InnoDB";

    /// <summary>User schemas of a server: what is copied, replicated and verified.</summary>
    public static async Task<List<string>> UserSchemasAsync(MySqlConnection connection, string ownSchema, CancellationToken cancellationToken)
    {
        var rows = await Sql.RowsAsync(connection, "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME", cancellationToken);
        return rows.Select(r => r["SCHEMA_NAME"]!)
            .Where(s => !SystemSchemas.Contains(s, StringComparer.OrdinalIgnoreCase))
            // Other deployments' schemas are theirs; this deployment's heartbeat schema is copied.
            .Where(s => !s.StartsWith("teal_", StringComparison.Ordinal) || s == ownSchema)
            .ToList();
    }

    /// <summary>Base tables of the user schemas, with the engine and estimated size.</summary>
    public static async Task<List<TableInfo>> TablesAsync(MySqlConnection connection, IReadOnlyList<string> schemas, CancellationToken cancellationToken)
    {
        if (schemas.Count == 0)
        {
            return [];
        }

        var list = string.Join(",", schemas.Select(Sql.Literal));
        var rows = await Sql.RowsAsync(
            connection,
            $"""
            SELECT t.TABLE_SCHEMA, t.TABLE_NAME, t.ENGINE, COALESCE(t.TABLE_ROWS, 0) AS TABLE_ROWS, COALESCE(t.DATA_LENGTH, 0) AS DATA_LENGTH,
                   EXISTS (SELECT 1 FROM information_schema.TABLE_CONSTRAINTS c WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME AND c.CONSTRAINT_TYPE = 'PRIMARY KEY') AS HAS_PK
            FROM information_schema.TABLES t
            WHERE t.TABLE_TYPE = 'BASE TABLE' AND t.TABLE_SCHEMA IN ({list})
            ORDER BY t.TABLE_SCHEMA, t.TABLE_NAME
            """,
            cancellationToken);
        return rows.Select(r => new TableInfo(r["TABLE_SCHEMA"]!, r["TABLE_NAME"]!, r["ENGINE"] ?? string.Empty, long.Parse(r["TABLE_ROWS"]!, System.Globalization.CultureInfo.InvariantCulture), long.Parse(r["DATA_LENGTH"]!, System.Globalization.CultureInfo.InvariantCulture), r["HAS_PK"] == "1")).ToList();
    }

    /// <summary>Columns Teal can write (generated columns are computed by the server) in table order.</summary>
    public static async Task<List<ColumnInfo>> ColumnsAsync(MySqlConnection connection, string schema, string table, CancellationToken cancellationToken)
    {
        var rows = await Sql.RowsAsync(
            connection,
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_KEY, EXTRA, IS_GENERATED FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = @s AND TABLE_NAME = @t ORDER BY ORDINAL_POSITION",
            cancellationToken,
            ("@s", schema),
            ("@t", table));
        return rows.Select(r => new ColumnInfo(r["COLUMN_NAME"]!, r["DATA_TYPE"]!, r["EXTRA"] ?? string.Empty, r["IS_GENERATED"] == "ALWAYS")).ToList();
    }

    /// <summary>Primary-key columns in key order.</summary>
    public static async Task<List<string>> PrimaryKeyAsync(MySqlConnection connection, string schema, string table, CancellationToken cancellationToken)
    {
        var rows = await Sql.RowsAsync(
            connection,
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = @s AND TABLE_NAME = @t AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
            cancellationToken,
            ("@s", schema),
            ("@t", table));
        return rows.Select(r => r["COLUMN_NAME"]!).ToList();
    }
}

internal sealed record TableInfo(string Schema, string Name, string Engine, long EstimatedRows, long DataBytes, bool HasPrimaryKey)
{
    public string FullName => $"{Schema}.{Name}";

    public string Quoted => Sql.Table(Schema, Name);

    public bool IsTransactional => Engine.Equals("InnoDB", StringComparison.OrdinalIgnoreCase);
}

internal sealed record ColumnInfo(string Name, string DataType, string Extra, bool Generated)
{
    public bool AutoIncrement => Extra.Contains("auto_increment", StringComparison.OrdinalIgnoreCase);
}
