using System.Globalization;
using System.Net.Sockets;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Postgres.Wire;

namespace Teal.Postgres.PgBouncer;

/// <summary>A row of <c>SHOW DATABASES</c>: where PgBouncer currently sends an entry's connections.</summary>
public sealed record PgBouncerDatabase(string Name, string? Host, int Port, string Database, string? PoolMode, bool Paused, bool Disabled)
{
    public bool PointsAt(EndpointTarget target) =>
        string.Equals(Host, target.Host, StringComparison.OrdinalIgnoreCase) && Port == target.Port && Database == target.Database;

    public override string ToString() => $"{Host}:{Port}/{Database}";
}

/// <summary>
/// One connection to PgBouncer's admin console (the <c>pgbouncer</c> virtual database), with
/// typed answers to the SHOW commands Teal reads. Every failure leaves as a
/// <see cref="TealException"/> naming the endpoint and what to fix, never the password.
/// </summary>
internal sealed class PgBouncerConsole : IAsyncDisposable
{
    private readonly SimpleQueryConnection _connection;
    private readonly PgBouncerSpec _spec;
    private readonly string _endpoint;

    private PgBouncerConsole(SimpleQueryConnection connection, PgBouncerSpec spec, string endpoint)
    {
        _connection = connection;
        _spec = spec;
        _endpoint = endpoint;
    }

    public bool IsBroken => _connection.IsBroken;

    public static async Task<PgBouncerConsole> OpenAsync(PgBouncerSpec spec, string? password, string endpoint, CancellationToken cancellationToken)
    {
        var options = new WireConnectOptions(spec.AdminHost, spec.AdminPort, spec.AdminUser, "pgbouncer") { Password = password, ConnectTimeout = TimeSpan.FromSeconds(5) };
        try
        {
            return new PgBouncerConsole(await SimpleQueryConnection.OpenAsync(options, cancellationToken), spec, endpoint);
        }
        catch (Exception ex) when (ex is SocketException or IOException or PostgresWireException)
        {
            throw Translate(ex, spec, endpoint, "log in to");
        }
    }

    /// <summary>Runs one console command; PgBouncer's refusals become <see cref="TealException"/>s.</summary>
    public async Task<QueryResult> RunAsync(string command, CancellationToken cancellationToken)
    {
        try
        {
            return await _connection.QueryAsync(command, cancellationToken);
        }
        catch (Exception ex) when (ex is SocketException or IOException or PostgresWireException)
        {
            throw Translate(ex, _spec, _endpoint, command.Split(' ')[0]);
        }
    }

    public async Task<IReadOnlyList<PgBouncerDatabase>> ShowDatabasesAsync(CancellationToken cancellationToken)
    {
        var result = await RunAsync("SHOW DATABASES", cancellationToken);
        return [.. result.NamedRows().Select(r => new PgBouncerDatabase(
            r["name"] ?? "",
            r["host"],
            (int)r.Number("port"),
            r["database"] ?? "",
            r["pool_mode"],
            r.Number("paused") != 0,
            r.Number("disabled") != 0))];
    }

    /// <summary>The entry Teal moves, as PgBouncer runs it now; null when PgBouncer has no such database.</summary>
    public async Task<PgBouncerDatabase?> ShowDatabaseAsync(CancellationToken cancellationToken) =>
        (await ShowDatabasesAsync(cancellationToken)).FirstOrDefault(d => d.Name == _spec.Database);

    /// <summary>A setting's current value from <c>SHOW CONFIG</c>, or null when this PgBouncer has no such setting.</summary>
    public async Task<string?> ShowConfigAsync(string key, CancellationToken cancellationToken)
    {
        var result = await RunAsync("SHOW CONFIG", cancellationToken);
        return result.NamedRows().FirstOrDefault(r => r["key"] == key) is { Values: not null } row ? row["value"] : null;
    }

    /// <summary>
    /// <c>query_wait_timeout</c>: how long PgBouncer lets a client wait for a server connection
    /// before failing it, i.e. how long a paused client is held. Null when 0 (wait forever).
    /// </summary>
    public async Task<TimeSpan?> HeldClientTimeoutAsync(CancellationToken cancellationToken)
    {
        var value = await ShowConfigAsync("query_wait_timeout", cancellationToken);
        return double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds) && seconds > 0
            ? TimeSpan.FromSeconds(seconds)
            : null;
    }

    public ValueTask DisposeAsync() => _connection.DisposeAsync();

    /// <summary>The console's name for the entry, quoted as an identifier so any entry name is accepted.</summary>
    public static string Quote(string database) => "\"" + database.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"";

    private static TealException Translate(Exception ex, PgBouncerSpec spec, string endpoint, string operation)
    {
        var where = $"PgBouncer at {spec.AdminHost}:{spec.AdminPort} (endpoint '{endpoint}')";
        return ex switch
        {
            PostgresWireException { IsAuthenticationFailure: true } => new TealException(
                "endpoint.pgbouncer-auth-failed",
                $"{where} refused the login of admin user '{spec.AdminUser}': wrong password or unknown user",
                $"store the password of '{spec.AdminUser}' under the endpoint's secret reference and check PgBouncer's auth_file and auth_type",
                ex) { Kind = TealErrorKind.Refused },
            // PgBouncer's words for a user that is neither in admin_users nor in stats_users,
            // and for a stats user sending an admin command.
            PostgresWireException w when w.Message.Contains("not allowed", StringComparison.OrdinalIgnoreCase)
                                      || w.Message.Contains("admin access needed", StringComparison.OrdinalIgnoreCase) => new TealException(
                "endpoint.pgbouncer-not-admin",
                $"{where} does not let '{spec.AdminUser}' run admin commands ({w.Message})",
                $"add '{spec.AdminUser}' to admin_users in PgBouncer's ini and RELOAD it",
                ex) { Kind = TealErrorKind.Refused },
            PostgresWireException w => new TealException(
                "endpoint.pgbouncer-command-failed",
                $"{where} refused {operation}: {w.Message}",
                "see PgBouncer's log for details",
                ex) { Kind = TealErrorKind.Refused },
            _ => new TealException(
                "endpoint.pgbouncer-unreachable",
                $"cannot {operation} {where}: {ex.Message}",
                "check that PgBouncer runs and listens there (listen_addr, listen_port) and that the admin host and port are right",
                ex) { Kind = TealErrorKind.Unavailable },
        };
    }
}
