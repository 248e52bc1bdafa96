using MySqlConnector;
using Teal.Core.Engines;
using Teal.MySql.Connections;

namespace Teal.MySql.Replication;

/// <summary>
/// The pooled connections of one link, one pool per side. Sessions name no default database:
/// green's copy of blue's databases does not exist before the copy, and every statement Teal
/// runs names its schema.
/// </summary>
internal sealed class LinkSessions(LinkSpec spec) : IAsyncDisposable
{
    private readonly Lazy<MySqlDataSource> _blue = new(() => MySqlConnections.DataSource(spec.Blue.WithDatabase(string.Empty)));
    private readonly Lazy<MySqlDataSource> _green = new(() => MySqlConnections.DataSource(spec.Green.WithDatabase(string.Empty)));

    public LinkSpec Spec => spec;

    /// <summary>Teal's schema on both sides for this deployment (heartbeat table; <c>teal_</c> + the id's hex).</summary>
    public string Schema => spec.Name;

    public ConnectionInfo Connection(Side side) => side == Side.Blue ? spec.Blue : spec.Green;

    public static string Role(Side side) => side == Side.Blue ? "blue" : "green";

    public Task<MySqlConnection> OpenAsync(Side side, CancellationToken cancellationToken) =>
        MySqlConnections.OpenAsync(side == Side.Blue ? _blue.Value : _green.Value, Connection(side).WithDatabase(string.Empty), Role(side), cancellationToken);

    /// <summary>
    /// A session whose changes stay on this server (<c>sql_log_bin=0</c>): Teal's bookkeeping,
    /// account locks and the copy into green must not reach the binlog, or they would replicate
    /// (a lock on blue would lock green too) or break green's GTID order.
    /// </summary>
    public async Task<MySqlConnection> OpenUnloggedAsync(Side side, CancellationToken cancellationToken)
    {
        var connection = await OpenAsync(side, cancellationToken);
        await Sql.ExecuteAsync(connection, "SET SESSION sql_log_bin = 0", cancellationToken);
        return connection;
    }

    /// <summary>Opens two sessions per side at once and returns them to their pools, so a switchover sets none up while clients wait.</summary>
    public async Task WarmUpAsync(CancellationToken cancellationToken)
    {
        var opening = new[] { Side.Blue, Side.Blue, Side.Green, Side.Green }.Select(side => OpenAsync(side, cancellationToken)).ToArray();
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
        foreach (var source in new[] { _blue, _green })
        {
            if (source.IsValueCreated)
            {
                await source.Value.DisposeAsync();
            }
        }
    }
}
