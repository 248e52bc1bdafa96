using System.Globalization;
using MySqlConnector;
using Teal.Core.Engines;
using Teal.Core.Errors;

namespace Teal.MySql.Connections;

/// <summary>
/// Parses MariaDB/MySQL connection strings as operators write them: a URI
/// (<c>mysql://user:password@host:port/db?key=value</c>, also <c>mariadb://</c>) or the driver's
/// <c>Server=…;User ID=…</c> form. Refusals never echo the text, which may hold a password.
/// </summary>
public static class MySqlConnectionStrings
{
    public const int DefaultPort = 3306;

    /// <summary>The database a connection uses when none is named: always present on every server.</summary>
    public const string DefaultDatabase = "mysql";

    public static ConnectionInfo Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        text = text.Trim();
        return text.StartsWith("mysql://", StringComparison.OrdinalIgnoreCase) || text.StartsWith("mariadb://", StringComparison.OrdinalIgnoreCase)
            ? ParseUri(text)
            : ParseKeyValue(text);
    }

    /// <summary>A <c>mysql://</c> URI for an instance (the password escaped), as <c>teal instance url</c> prints it.</summary>
    public static string Uri(string host, int port, string user, string? password, string database)
    {
        var credentials = System.Uri.EscapeDataString(user) + (password is null ? string.Empty : ":" + System.Uri.EscapeDataString(password));
        var hostPart = host.Contains(':', StringComparison.Ordinal) ? $"[{host}]" : host;
        return $"mysql://{credentials}@{hostPart}:{port.ToString(CultureInfo.InvariantCulture)}/{System.Uri.EscapeDataString(database)}";
    }

    private static ConnectionInfo ParseUri(string text)
    {
        if (!System.Uri.TryCreate(text, UriKind.Absolute, out var uri) || string.IsNullOrEmpty(uri.Host))
        {
            throw Invalid("it is not a valid mysql:// URI");
        }

        var userInfo = uri.UserInfo.Split(':', 2);
        var user = System.Uri.UnescapeDataString(userInfo[0]);
        if (user.Length == 0)
        {
            throw Invalid("it names no user");
        }

        var password = userInfo.Length > 1 ? System.Uri.UnescapeDataString(userInfo[1]) : null;
        var database = System.Uri.UnescapeDataString(uri.AbsolutePath.TrimStart('/'));
        var options = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (var pair in uri.Query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var kv = pair.Split('=', 2);
            var key = System.Uri.UnescapeDataString(kv[0]);
            if (key.Equals("password", StringComparison.OrdinalIgnoreCase))
            {
                password = kv.Length > 1 ? System.Uri.UnescapeDataString(kv[1]) : null;
                continue;
            }

            options[key] = kv.Length > 1 ? System.Uri.UnescapeDataString(kv[1]) : string.Empty;
        }

        Validate(options);
        var host = uri.Host.Trim('[', ']');
        return new ConnectionInfo(host, uri.IsDefaultPort || uri.Port <= 0 ? DefaultPort : uri.Port, user, password, database.Length == 0 ? DefaultDatabase : database) { Options = options };
    }

    private static ConnectionInfo ParseKeyValue(string text)
    {
        MySqlConnectionStringBuilder builder;
        try
        {
            builder = new MySqlConnectionStringBuilder(text);
        }
        catch (ArgumentException)
        {
            throw Invalid("it is neither a mysql:// URI nor Server=…;User ID=… settings");
        }

        if (string.IsNullOrEmpty(builder.Server) || string.IsNullOrEmpty(builder.UserID))
        {
            throw Invalid("it must name at least Server and User ID");
        }

        var known = new HashSet<string>(["Server", "Port", "User ID", "Password", "Database"], StringComparer.OrdinalIgnoreCase);
        var options = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        foreach (string key in builder.Keys)
        {
            if (!known.Contains(key) && builder.TryGetValue(key, out var value) && value is not null && builder.ShouldSerialize(key))
            {
                options[key] = Convert.ToString(value, CultureInfo.InvariantCulture) ?? string.Empty;
            }
        }

        return new ConnectionInfo(builder.Server, (int)builder.Port, builder.UserID, string.IsNullOrEmpty(builder.Password) ? null : builder.Password, string.IsNullOrEmpty(builder.Database) ? DefaultDatabase : builder.Database) { Options = options };
    }

    private static void Validate(Dictionary<string, string> options)
    {
        var builder = new MySqlConnectionStringBuilder();
        foreach (var (key, value) in options)
        {
            try
            {
                builder[key] = value;
            }
            catch (ArgumentException)
            {
                // The key is named (it is the operator's own text, not a secret); the value is not.
                throw Invalid($"the setting '{key}' is unknown or has an invalid value");
            }
        }
    }

    private static TealException Invalid(string why) =>
        new("connection.invalid", $"cannot read the connection string: {why}", "write it as mysql://user:password@host:port/database") { Kind = TealErrorKind.Invalid };
}
