using Npgsql;
using Teal.Core.Engines;
using Teal.Postgres.Connections;

namespace Teal.Postgres.Replication;

/// <summary>
/// The pooled connections of one link: blue and green in the deployment's database, green's
/// maintenance database (the deployment's database may not exist there yet), and one
/// "client-like" pool per side whose sessions do not override the fence, used to observe
/// that a fence is in effect.
/// </summary>
internal sealed class LinkSessions(LinkSpec spec) : IAsyncDisposable
{
    private readonly Lazy<NpgsqlDataSource> _blue = new(() => PostgresConnections.DataSource(spec.Blue));
    private readonly Lazy<NpgsqlDataSource> _green = new(() => PostgresConnections.DataSource(spec.Green));
    private readonly Lazy<NpgsqlDataSource> _greenAdmin = new(() => PostgresConnections.DataSource(spec.Green.WithDatabase(MaintenanceDatabase)));
    private readonly Lazy<NpgsqlDataSource> _blueObserver = new(() => Observer(spec.Blue));
    private readonly Lazy<NpgsqlDataSource> _greenObserver = new(() => Observer(spec.Green));

    /// <summary>Where Teal connects on green before the deployment's database exists.</summary>
    public const string MaintenanceDatabase = "postgres";

    public LinkSpec Spec => spec;

    public ConnectionInfo Connection(Side side) => side == Side.Blue ? spec.Blue : spec.Green;

    public static string Role(Side side) => side == Side.Blue ? "blue" : "green";

    public Task<NpgsqlConnection> OpenAsync(Side side, CancellationToken cancellationToken) =>
        PostgresConnections.OpenAsync(side == Side.Blue ? _blue.Value : _green.Value, Connection(side), Role(side), cancellationToken);

    public Task<NpgsqlConnection> OpenGreenAdminAsync(CancellationToken cancellationToken) =>
        PostgresConnections.OpenAsync(_greenAdmin.Value, spec.Green.WithDatabase(MaintenanceDatabase), "green", cancellationToken);

    /// <summary>A session that sees <c>default_transaction_read_only</c> as a client would.</summary>
    public Task<NpgsqlConnection> OpenObserverAsync(Side side, CancellationToken cancellationToken) =>
        PostgresConnections.OpenAsync(side == Side.Blue ? _blueObserver.Value : _greenObserver.Value, Connection(side), Role(side), cancellationToken);

    /// <summary>
    /// Fills the pools the switchover uses with open sessions: two per side in the deployment's
    /// database (sequence sync reads both sides at once, a step may hold one while opening
    /// another) and one observer per side. Each opens and goes back to its pool, where it stays
    /// for the pool's idle lifetime (minutes), well past a switchover.
    /// </summary>
    public async Task WarmUpAsync(CancellationToken cancellationToken)
    {
        Func<Task<NpgsqlConnection>>[] opens =
        [
            () => OpenAsync(Side.Blue, cancellationToken),
            () => OpenAsync(Side.Blue, cancellationToken),
            () => OpenAsync(Side.Green, cancellationToken),
            () => OpenAsync(Side.Green, cancellationToken),
            () => OpenObserverAsync(Side.Blue, cancellationToken),
            () => OpenObserverAsync(Side.Green, cancellationToken),
        ];

        // All open at once, so each pool really holds two sessions, not one opened twice.
        var opening = opens.Select(open => open()).ToArray();
        try
        {
            await Task.WhenAll(opening);
        }
        finally
        {
            foreach (var open in opening.Where(o => o.IsCompletedSuccessfully))
            {
                await open.Result.DisposeAsync();
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var source in new[] { _blue, _green, _greenAdmin, _blueObserver, _greenObserver })
        {
            if (source.IsValueCreated)
            {
                await source.Value.DisposeAsync();
            }
        }
    }

    private static NpgsqlDataSource Observer(ConnectionInfo connection)
    {
        var builder = PostgresConnections.Builder(connection);
        // No default_transaction_read_only override: this session must see the fence.
        builder.Options = "-c statement_timeout=0";
        builder.MaxPoolSize = 2;
        return new NpgsqlDataSourceBuilder(builder.ConnectionString).Build();
    }
}
