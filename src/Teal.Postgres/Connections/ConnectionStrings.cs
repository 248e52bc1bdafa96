using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;

namespace Teal.Postgres.Connections;

/// <summary>
/// Parses what operators paste as a PostgreSQL connection: a URI
/// (<c>postgresql://user:pw@host:5432/db?sslmode=require</c>), a libpq string
/// (<c>host=… port=… user=… password=… dbname=…</c>) or an Npgsql string (<c>Host=…;…</c>).
/// </summary>
public static class ConnectionStrings
{
    private static readonly Dictionary<string, string> LibpqToNpgsql = new(StringComparer.OrdinalIgnoreCase)
    {
        ["host"] = "Host",
        ["hostaddr"] = "Host",
        ["port"] = "Port",
        ["user"] = "Username",
        ["password"] = "Password",
        ["dbname"] = "Database",
        ["sslmode"] = "SSL Mode",
        ["connect_timeout"] = "Timeout",
        ["application_name"] = "Application Name",
        ["passfile"] = "Passfile",
    };

    public static ConnectionInfo Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var builder = text.StartsWith("postgres://", StringComparison.OrdinalIgnoreCase) || text.StartsWith("postgresql://", StringComparison.OrdinalIgnoreCase)
            ? FromUri(text)
            : text.Contains(';', StringComparison.Ordinal) || !text.Contains('=', StringComparison.Ordinal) ? FromNpgsql(text) : FromLibpq(text);

        if (string.IsNullOrEmpty(builder.Host))
        {
            throw Invalid("it names no host", "add host=… (or a URI postgresql://user@host:port/db)");
        }

        var options = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var key in builder.Keys)
        {
            if (key is "Host" or "Port" or "Username" or "Password" or "Database" || builder[key] is null)
            {
                continue;
            }

            options[key] = Convert.ToString(builder[key], System.Globalization.CultureInfo.InvariantCulture) ?? string.Empty;
        }

        return new ConnectionInfo(builder.Host, builder.Port, builder.Username ?? "postgres", builder.Password, builder.Database ?? builder.Username ?? "postgres")
        {
            Options = options,
        };
    }

    private static NpgsqlConnectionStringBuilder FromNpgsql(string text)
    {
        try
        {
            return new NpgsqlConnectionStringBuilder(text);
        }
        catch (ArgumentException ex)
        {
            // The parser's message may quote the text (and a password in it): keep only our own words.
            throw Invalid("it is not a valid connection string", "use host=… port=… user=… dbname=… or postgresql://user@host:port/db", ex);
        }
    }

    private static NpgsqlConnectionStringBuilder FromLibpq(string text)
    {
        var builder = new NpgsqlConnectionStringBuilder();
        foreach (var (key, value) in Tokenize(text))
        {
            if (!LibpqToNpgsql.TryGetValue(key, out var npgsqlKey))
            {
                throw Invalid($"the setting '{key}' is not supported", "supported: " + string.Join(", ", LibpqToNpgsql.Keys));
            }

            try
            {
                builder[npgsqlKey] = value;
            }
            catch (ArgumentException ex)
            {
                throw Invalid($"the value of '{key}' is not valid", "check the connection string", ex);
            }
        }

        return builder;
    }

    private static NpgsqlConnectionStringBuilder FromUri(string text)
    {
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri))
        {
            throw Invalid("the URI is not valid", "use postgresql://user:password@host:port/database");
        }

        var builder = new NpgsqlConnectionStringBuilder { Host = uri.Host, Port = uri.IsDefaultPort || uri.Port <= 0 ? 5432 : uri.Port };
        if (uri.UserInfo.Length > 0)
        {
            var parts = uri.UserInfo.Split(':', 2);
            builder.Username = Uri.UnescapeDataString(parts[0]);
            if (parts.Length == 2)
            {
                builder.Password = Uri.UnescapeDataString(parts[1]);
            }
        }

        var database = Uri.UnescapeDataString(uri.AbsolutePath.TrimStart('/'));
        if (database.Length > 0)
        {
            builder.Database = database;
        }

        foreach (var pair in uri.Query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var kv = pair.Split('=', 2);
            var key = Uri.UnescapeDataString(kv[0]);
            if (!LibpqToNpgsql.TryGetValue(key, out var npgsqlKey))
            {
                throw Invalid($"the URI parameter '{key}' is not supported", "supported: " + string.Join(", ", LibpqToNpgsql.Keys));
            }

            builder[npgsqlKey] = kv.Length == 2 ? Uri.UnescapeDataString(kv[1]) : string.Empty;
        }

        return builder;
    }

    /// <summary>Splits libpq's <c>key=value key='quoted value'</c> syntax.</summary>
    private static IEnumerable<(string Key, string Value)> Tokenize(string text)
    {
        var i = 0;
        while (true)
        {
            while (i < text.Length && char.IsWhiteSpace(text[i]))
            {
                i++;
            }

            if (i >= text.Length)
            {
                yield break;
            }

            var eq = text.IndexOf('=', i);
            if (eq < 0)
            {
                throw Invalid("a setting has no '='", "write settings as key=value");
            }

            var key = text[i..eq].Trim();
            i = eq + 1;
            while (i < text.Length && char.IsWhiteSpace(text[i]))
            {
                i++;
            }

            var value = new System.Text.StringBuilder();
            if (i < text.Length && text[i] == '\'')
            {
                i++;
                while (i < text.Length && text[i] != '\'')
                {
                    if (text[i] == '\\' && i + 1 < text.Length)
                    {
                        i++;
                    }

                    value.Append(text[i++]);
                }

                if (i >= text.Length)
                {
                    throw Invalid($"the value of '{key}' has no closing quote", "close the quote");
                }

                i++;
            }
            else
            {
                while (i < text.Length && !char.IsWhiteSpace(text[i]))
                {
                    value.Append(text[i++]);
                }
            }

            yield return (key, value.ToString());
        }
    }

    private static TealException Invalid(string what, string hint, Exception? inner = null) =>
        new("connection.invalid", $"the connection string is not usable: {what}", hint, inner);
}
