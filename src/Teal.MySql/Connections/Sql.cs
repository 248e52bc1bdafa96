using System.Globalization;
using MySqlConnector;

namespace Teal.MySql.Connections;

/// <summary>Small helpers over MySqlConnector: quoting and one-line queries.</summary>
internal static class Sql
{
    /// <summary>A backquoted identifier.</summary>
    public static string Id(string name) => "`" + name.Replace("`", "``", StringComparison.Ordinal) + "`";

    /// <summary>A backquoted <c>schema.table</c>.</summary>
    public static string Table(string schema, string table) => Id(schema) + "." + Id(table);

    /// <summary>A single-quoted string literal (for statements that take no parameters: CHANGE MASTER, ALTER USER).</summary>
    public static string Literal(string value) =>
        "'" + value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("'", "''", StringComparison.Ordinal) + "'";

    /// <summary><c>'user'@'host'</c>.</summary>
    public static string Account(string user, string host) => Literal(user) + "@" + Literal(host);

    public static async Task<int> ExecuteAsync(MySqlConnection connection, string sql, CancellationToken cancellationToken, params (string Name, object? Value)[] parameters)
    {
        await using var command = Command(connection, sql, parameters);
        return await command.ExecuteNonQueryAsync(cancellationToken);
    }

    public static async Task<object?> ScalarAsync(MySqlConnection connection, string sql, CancellationToken cancellationToken, params (string Name, object? Value)[] parameters)
    {
        await using var command = Command(connection, sql, parameters);
        var value = await command.ExecuteScalarAsync(cancellationToken);
        return value is DBNull ? null : value;
    }

    /// <summary>The first column of the first row as text; null for NULL or no row.</summary>
    public static async Task<string?> StringAsync(MySqlConnection connection, string sql, CancellationToken cancellationToken, params (string Name, object? Value)[] parameters) =>
        await ScalarAsync(connection, sql, cancellationToken, parameters) is { } value ? Convert.ToString(value, CultureInfo.InvariantCulture) : null;

    public static async Task<long> LongAsync(MySqlConnection connection, string sql, CancellationToken cancellationToken, params (string Name, object? Value)[] parameters) =>
        Convert.ToInt64(await ScalarAsync(connection, sql, cancellationToken, parameters) ?? 0L, CultureInfo.InvariantCulture);

    /// <summary>Every row as a column-name → value map (values as strings; NULL as null).</summary>
    public static async Task<List<Dictionary<string, string?>>> RowsAsync(MySqlConnection connection, string sql, CancellationToken cancellationToken, params (string Name, object? Value)[] parameters)
    {
        await using var command = Command(connection, sql, parameters);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        return await ReadRowsAsync(reader, cancellationToken);
    }

    private static async Task<List<Dictionary<string, string?>>> ReadRowsAsync(MySqlDataReader reader, CancellationToken cancellationToken)
    {
        var rows = new List<Dictionary<string, string?>>();
        while (await reader.ReadAsync(cancellationToken))
        {
            var row = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
            for (var i = 0; i < reader.FieldCount; i++)
            {
                row[reader.GetName(i)] = reader.IsDBNull(i) ? null : ValueText(reader.GetValue(i));
            }

            rows.Add(row);
        }

        return rows;
    }

    /// <summary>
    /// A batch of statements in one round trip, the rows of each statement that returns rows (in
    /// order; statements without rows, such as SET or INSERT, give none).
    /// </summary>
    public static async Task<List<List<Dictionary<string, string?>>>> ResultSetsAsync(MySqlConnection connection, string sql, CancellationToken cancellationToken)
    {
        await using var command = Command(connection, sql, []);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var sets = new List<List<Dictionary<string, string?>>>();
        do
        {
            if (reader.FieldCount > 0)
            {
                sets.Add(await ReadRowsAsync(reader, cancellationToken));
            }
        }
        while (await reader.NextResultAsync(cancellationToken));

        return sets;
    }

    /// <summary>The first row, or null.</summary>
    public static async Task<Dictionary<string, string?>?> RowAsync(MySqlConnection connection, string sql, CancellationToken cancellationToken) =>
        (await RowsAsync(connection, sql, cancellationToken)).FirstOrDefault();

    /// <summary>A global variable's value (<c>SELECT @@global.NAME</c>), or null when the server has no such variable.</summary>
    public static async Task<string?> VariableAsync(MySqlConnection connection, string name, CancellationToken cancellationToken)
    {
        var rows = await RowsAsync(connection, "SHOW GLOBAL VARIABLES WHERE Variable_name = @name", cancellationToken, ("@name", name));
        return rows.Count == 0 ? null : rows[0]["Value"];
    }

    private static MySqlCommand Command(MySqlConnection connection, string sql, (string Name, object? Value)[] parameters)
    {
        var command = new MySqlCommand(sql, connection);
        foreach (var (name, value) in parameters)
        {
            command.Parameters.AddWithValue(name, value ?? DBNull.Value);
        }

        return command;
    }

    private static string ValueText(object value) => value switch
    {
        byte[] bytes => System.Text.Encoding.UTF8.GetString(bytes),
        DateTime dt => dt.ToString("yyyy-MM-dd HH:mm:ss.ffffff", CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? string.Empty,
    };
}
