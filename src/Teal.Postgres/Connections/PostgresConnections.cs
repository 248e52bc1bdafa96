using System.Net.Sockets;
using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;

namespace Teal.Postgres.Connections;

/// <summary>
/// Builds Teal's own connections to PostgreSQL and turns connection failures into operator
/// errors. Teal's sessions are exempt from the fence (they set
/// <c>default_transaction_read_only=off</c> at startup) and say who they are in
/// <c>application_name</c>, so guardrails and the drain can tell them from clients.
/// </summary>
public static class PostgresConnections
{
    /// <summary>The application_name of every Teal session.</summary>
    public const string ApplicationName = "teal";

    public static NpgsqlConnectionStringBuilder Builder(ConnectionInfo connection, bool pooling = true)
    {
        var builder = new NpgsqlConnectionStringBuilder
        {
            Host = connection.Host,
            Port = connection.Port,
            Username = connection.User,
            Database = connection.Database,
            ApplicationName = ApplicationName,
            Options = "-c default_transaction_read_only=off -c statement_timeout=0 -c lock_timeout=0",
            Timeout = 10,
            CommandTimeout = 0,
            Pooling = pooling,
            // Teal's control connections must not be shared with a broken server forever.
            ConnectionLifetime = 300,
            // The heartbeat and the monitor run every second: keep a few warm connections.
            MinPoolSize = 0,
            MaxPoolSize = 20,
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

    public static NpgsqlDataSource DataSource(ConnectionInfo connection, bool pooling = true) =>
        new NpgsqlDataSourceBuilder(Builder(connection, pooling).ConnectionString).Build();

    /// <summary>Opens a connection; failures become a <see cref="TealException"/> without the password.</summary>
    public static async Task<NpgsqlConnection> OpenAsync(NpgsqlDataSource dataSource, ConnectionInfo connection, string role, CancellationToken cancellationToken)
    {
        try
        {
            return await dataSource.OpenConnectionAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
        {
            throw Classify(ex, connection, role);
        }
    }

    /// <summary>
    /// Maps a connection failure to an operator error naming the server and the fix. The
    /// message is built from our own words and the server's SQLSTATE, never from the
    /// connection string, so a password cannot leak through it.
    /// </summary>
    public static TealException Classify(Exception ex, ConnectionInfo connection, string role)
    {
        var where = $"{role} ({connection})";
        return ex switch
        {
            PostgresException { SqlState: PostgresErrorCodes.InvalidPassword or PostgresErrorCodes.InvalidAuthorizationSpecification } pg =>
                new TealException("connection.authentication-failed", $"{where}: authentication failed for user \"{connection.User}\" ({pg.SqlState})", "check the user and password in the connection string", ex) { Kind = TealErrorKind.Invalid },
            PostgresException { SqlState: PostgresErrorCodes.InvalidCatalogName } =>
                new TealException("connection.database-not-found", $"{where}: database \"{connection.Database}\" does not exist", "name an existing database in the connection string (dbname=…)", ex),
            PostgresException { SqlState: PostgresErrorCodes.TooManyConnections } =>
                new TealException("connection.too-many-connections", $"{where}: the server has no free connection slots", "raise max_connections or close idle sessions", ex) { Kind = TealErrorKind.Unavailable },
            PostgresException { SqlState: PostgresErrorCodes.CannotConnectNow } =>
                new TealException("connection.starting-up", $"{where}: the server is starting up or shutting down", "wait until it accepts connections", ex) { Kind = TealErrorKind.Unavailable },
            PostgresException pg =>
                new TealException("connection.refused", $"{where}: the server refused the connection: {pg.MessageText} ({pg.SqlState})", "check pg_hba.conf and the role's LOGIN privilege", ex),
            _ when Find<SocketException>(ex) is { } socket =>
                new TealException("connection.unreachable", $"{where}: cannot connect: {socket.Message}", "check that the server runs and that host and port are right", ex) { Kind = TealErrorKind.Unavailable },
            _ when Find<TimeoutException>(ex) is not null =>
                new TealException("connection.timeout", $"{where}: no answer within the connect timeout", "check that the server runs and that host and port are right", ex) { Kind = TealErrorKind.Unavailable },
            _ => new TealException("connection.failed", $"{where}: cannot connect: {ex.GetType().Name}", "check the connection string", ex) { Kind = TealErrorKind.Unavailable },
        };
    }

    private static T? Find<T>(Exception? ex)
        where T : Exception
    {
        for (; ex is not null; ex = ex.InnerException)
        {
            if (ex is T match)
            {
                return match;
            }
        }

        return null;
    }
}
