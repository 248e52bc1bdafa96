using System.Text;

namespace Teal.Postgres.Connections;

/// <summary>
/// libpq's <c>key=value</c> connection strings, as PostgreSQL itself wants them (a
/// subscription's CONNECTION, pg_dump, psql). Npgsql's own format differs ("Host=" vs "host=").
/// </summary>
public static class Libpq
{
    /// <summary>Builds <c>host=… port=… user=… dbname=…</c>, quoting values as libpq requires.</summary>
    public static string Conninfo(IEnumerable<KeyValuePair<string, string?>> settings)
    {
        var text = new StringBuilder();
        foreach (var (key, value) in settings)
        {
            if (value is null)
            {
                continue;
            }

            if (text.Length > 0)
            {
                text.Append(' ');
            }

            text.Append(key).Append('=').Append(Quote(value));
        }

        return text.ToString();
    }

    public static string Conninfo(string host, int port, string user, string? password, string database) =>
        Conninfo([
            new("host", host),
            new("port", port.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            new("user", user),
            new("password", password),
            new("dbname", database),
        ]);

    /// <summary>Single-quotes a value when it is empty or holds spaces, quotes or backslashes.</summary>
    public static string Quote(string value)
    {
        if (value.Length > 0 && !value.Any(c => char.IsWhiteSpace(c) || c is '\'' or '\\'))
        {
            return value;
        }

        return "'" + value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("'", "\\'", StringComparison.Ordinal) + "'";
    }
}
