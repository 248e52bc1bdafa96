namespace Teal.Postgres.Wire;

/// <summary>
/// One statement's answer over the simple query protocol: every value arrives as text (or null),
/// which is all the PgBouncer console ever sends.
/// </summary>
public sealed record QueryResult(string CommandTag, IReadOnlyList<string> Columns, IReadOnlyList<IReadOnlyList<string?>> Rows)
{
    /// <summary>The index of <paramref name="column"/>, or -1 when the result has no such column.</summary>
    public int IndexOf(string column)
    {
        for (var i = 0; i < Columns.Count; i++)
        {
            if (string.Equals(Columns[i], column, StringComparison.OrdinalIgnoreCase))
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>Rows as column-name → value maps, for callers that read a few named columns.</summary>
    public IEnumerable<QueryRow> NamedRows() => Rows.Select(row => new QueryRow(this, row));
}

/// <summary>A row read by column name; a column the server did not send reads as null.</summary>
public readonly record struct QueryRow(QueryResult Result, IReadOnlyList<string?> Values)
{
    public string? this[string column] => Result.IndexOf(column) is var i and >= 0 ? Values[i] : null;

    /// <summary>The column as a 64-bit integer; 0 when absent or null (PgBouncer's counters).</summary>
    public long Number(string column) =>
        long.TryParse(this[column], System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var value) ? value : 0;
}
