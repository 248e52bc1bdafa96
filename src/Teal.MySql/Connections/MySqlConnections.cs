using System.Net.Sockets;
using MySqlConnector;
using Teal.Core.Engines;
using Teal.Core.Errors;

namespace Teal.MySql.Connections;

/// <summary>
/// Builds Teal's own connections to MariaDB/MySQL and turns connection failures into operator
/// errors. Teal's sessions log in with the instance's account, which the fence exempts: it is
/// the account Teal writes through a fence with (heartbeat, bookkeeping) and must log in with
/// after a crash to undo one.
/// </summary>
public static class MySqlConnections
{
    /// <summary>The program_name connection attribute of every Teal session.</summary>
    public const string ApplicationName = "teal";

    public static MySqlConnectionStringBuilder Builder(ConnectionInfo connection, bool pooling = true)
    {
        ArgumentNullException.ThrowIfNull(connection);
        var builder = new MySqlConnectionStringBuilder
        {
            Server = connection.Host,
            Port = (uint)connection.Port,
            UserID = connection.User,
            Database = connection.Database,
            ApplicationName = ApplicationName,
            ConnectionTimeout = 10,
            DefaultCommandTimeout = 0,
            Pooling = pooling,
            // Teal's control connections must not be shared with a broken server forever.
            ConnectionLifeTime = 300,
            MinimumPoolSize = 0,
            MaximumPoolSize = 20,
            AllowUserVariables = true,
            // The copy streams rows with LOAD DATA LOCAL (MySqlBulkCopy).
            AllowLoadLocalInfile = true,
            // Values travel as the server has them: CHAR(36) stays text, TINYINT(1) stays a number.
            GuidFormat = MySqlGuidFormat.None,
            TreatTinyAsBoolean = false,
            // Killing a session (drain, fence) must not make the pool reuse a dead connection.
            ConnectionReset = true,
        };
        if (connection.Password is not null)
        {
            builder.Password = connection.Password;
        }

        foreach (var (key, value) in connection.Options)
        {
            builder[key] = value;
        }

        return builder;
    }

    public static MySqlDataSource DataSource(ConnectionInfo connection, bool pooling = true) =>
        new MySqlDataSourceBuilder(Builder(connection, pooling).ConnectionString).Build();

    /// <summary>Opens a connection; failures become a <see cref="TealException"/> without the password.</summary>
    public static async Task<MySqlConnection> OpenAsync(MySqlDataSource dataSource, ConnectionInfo connection, string role, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        try
        {
            return await dataSource.OpenConnectionAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is MySqlException or TimeoutException or SocketException)
        {
            throw Classify(ex, connection, role);
        }
    }

    /// <summary>
    /// Maps a connection failure to an operator error naming the server and the fix, built from
    /// our own words and the server's error number, never from the connection string.
    /// </summary>
    public static TealException Classify(Exception ex, ConnectionInfo connection, string role)
    {
        ArgumentNullException.ThrowIfNull(connection);
        var where = $"{role} ({connection})";
        return ex switch
        {
            MySqlException { ErrorCode: MySqlErrorCode.AccessDenied or MySqlErrorCode.DatabaseAccessDenied } my =>
                new TealException("connection.authentication-failed", $"{where}: access denied for user \"{connection.User}\" ({my.Number})", "check the user and password in the connection string", ex) { Kind = TealErrorKind.Invalid },
            MySqlException { ErrorCode: MySqlErrorCode.UnknownDatabase } =>
                new TealException("connection.database-not-found", $"{where}: database \"{connection.Database}\" does not exist", "name an existing database in the connection string (…/database)", ex),
            MySqlException { ErrorCode: MySqlErrorCode.ConnectionCountError or MySqlErrorCode.TooManyUserConnections } =>
                new TealException("connection.too-many-connections", $"{where}: the server has no free connection slots", "raise max_connections or close idle sessions", ex) { Kind = TealErrorKind.Unavailable },
            MySqlException { Number: 4151 or 3118 } =>
                new TealException("connection.account-locked", $"{where}: the account \"{connection.User}\" is locked", "a fenced server locks privileged accounts other than Teal's; unlock it with ALTER USER … ACCOUNT UNLOCK or `teal instance unfence`", ex),
            MySqlException { ErrorCode: MySqlErrorCode.UnableToConnectToHost } =>
                new TealException("connection.unreachable", $"{where}: cannot connect", "check that the server runs and that host and port are right", ex) { Kind = TealErrorKind.Unavailable },
            MySqlException my =>
                new TealException("connection.refused", $"{where}: the server refused the connection ({my.Number})", "check the account's host and privileges", ex),
            SocketException socket =>
                new TealException("connection.unreachable", $"{where}: cannot connect: {socket.Message}", "check that the server runs and that host and port are right", ex) { Kind = TealErrorKind.Unavailable },
            _ => new TealException("connection.timeout", $"{where}: no answer within the connect timeout", "check that the server runs and that host and port are right", ex) { Kind = TealErrorKind.Unavailable },
        };
    }
}
