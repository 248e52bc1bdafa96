using Npgsql;
using Teal.Core.Engines;

namespace Teal.Postgres.Connections;

/// <summary>
/// A login role's stored password verifier (SCRAM), for the proxy's auth query. Read from
/// <c>pg_authid</c>, which only a superuser can read: the login is Teal's own.
/// </summary>
public static class RoleVerifiers
{
    /// <summary>The verifier of <paramref name="role"/>, or null when no such login role exists.</summary>
    public static async Task<string?> ReadAsync(ConnectionInfo login, string role, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(login);
        await using var connection = new NpgsqlConnection(PostgresConnections.Builder(login).ConnectionString);
        await connection.OpenAsync(cancellationToken);
        await using var command = new NpgsqlCommand("select rolpassword from pg_catalog.pg_authid where rolname = $1 and rolcanlogin", connection);
        command.Parameters.Add(new NpgsqlParameter { Value = role });
        return await command.ExecuteScalarAsync(cancellationToken) as string;
    }
}
