using Npgsql;
using Teal.Core.Errors;

namespace Teal.Postgres.Connections;

/// <summary>
/// PostgreSQL failures that may pass by themselves: what Npgsql calls transient (connection lost,
/// timeouts), and the SQLSTATE classes of a server going away or too busy (08 connection
/// exception, 53 insufficient resources, 57P01–57P03 shutdown and cannot-connect-now) and of
/// serialization conflicts (40001, 40P01). Everything else is permanent: retrying a syntax or
/// permission error only hides it.
/// </summary>
public sealed class PostgresTransientErrors : ITransientErrorClassifier
{
    public bool IsTransient(Exception exception) => exception switch
    {
        PostgresException pg => pg.IsTransient
            || pg.SqlState.StartsWith("08", StringComparison.Ordinal)
            || pg.SqlState.StartsWith("53", StringComparison.Ordinal)
            || pg.SqlState is PostgresErrorCodes.AdminShutdown or PostgresErrorCodes.CrashShutdown or PostgresErrorCodes.CannotConnectNow
                or PostgresErrorCodes.SerializationFailure or PostgresErrorCodes.DeadlockDetected,
        NpgsqlException npgsql => npgsql.IsTransient,
        _ => false,
    };
}
