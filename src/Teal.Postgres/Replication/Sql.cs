using Npgsql;

namespace Teal.Postgres.Replication;

/// <summary>
/// Quoting and small query helpers for the link's catalog queries. Identifiers that come from
/// catalogs or the deployment name are always quoted, so unusual table names work and cannot
/// inject SQL.
/// </summary>
internal static class Sql
{
    public static string Ident(string name) => "\"" + name.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    /// <summary>A string literal (standard_conforming_strings is on in every supported version).</summary>
    public static string Literal(string value) => "'" + value.Replace("'", "''", StringComparison.Ordinal) + "'";

    public static string Qualified(string schema, string name) => Ident(schema) + "." + Ident(name);

    /// <summary>The display form Teal uses for tables: <c>schema.table</c>, unquoted.</summary>
    public static string Display(string schema, string name) => schema + "." + name;

    /// <summary>Turns an operator's <c>schema.table</c> (or <c>table</c>, meaning public) into a quoted name.</summary>
    public static string QualifiedFromDisplay(string text)
    {
        var dot = text.IndexOf('.', StringComparison.Ordinal);
        return dot < 0 ? Qualified("public", text) : Qualified(text[..dot], text[(dot + 1)..]);
    }

    /// <summary>
    /// A command with <c>$1</c>, <c>$2</c>… bound to <paramref name="parameters"/> in order. An
    /// array of strings (or of any other type narrower than object) given alone is one array
    /// parameter, <c>= ANY($1)</c>: C# would otherwise bind it as the whole list by array
    /// covariance and send its first element as <c>$1</c>.
    /// </summary>
    public static NpgsqlCommand Command(this NpgsqlConnection connection, string sql, params object?[] parameters)
    {
        var command = connection.CreateCommand();
        command.CommandText = sql;
        // The compiler builds exactly an object[] for the expanded form; any other runtime type is
        // a caller's own array that C# took as the list.
        object?[] values = parameters.GetType() == typeof(object[]) ? parameters : [parameters];
        foreach (var p in values)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = p ?? DBNull.Value });
        }

        return command;
    }

    public static async Task ExecuteAsync(this NpgsqlConnection connection, string sql, CancellationToken cancellationToken, params object?[] parameters)
    {
        await using var command = connection.Command(sql, parameters);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    public static async Task<T?> ScalarAsync<T>(this NpgsqlConnection connection, string sql, CancellationToken cancellationToken, params object?[] parameters)
    {
        await using var command = connection.Command(sql, parameters);
        var value = await command.ExecuteScalarAsync(cancellationToken);
        return value is null or DBNull ? default : (T)value;
    }

    public static async Task<List<T>> QueryAsync<T>(this NpgsqlConnection connection, string sql, Func<NpgsqlDataReader, T> map, CancellationToken cancellationToken, params object?[] parameters)
    {
        await using var command = connection.Command(sql, parameters);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var rows = new List<T>();
        while (await reader.ReadAsync(cancellationToken))
        {
            rows.Add(map(reader));
        }

        return rows;
    }

    public static string? NullableString(this NpgsqlDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal);

    public static long? NullableInt64(this NpgsqlDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : Convert.ToInt64(reader.GetValue(ordinal), System.Globalization.CultureInfo.InvariantCulture);
}
