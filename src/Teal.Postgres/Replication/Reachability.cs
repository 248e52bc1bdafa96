using System.Runtime.ExceptionServices;
using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Postgres.Connections;

namespace Teal.Postgres.Replication;

/// <summary>
/// Turns "the connection broke" into "blue (or green) cannot be reached". A server that stops
/// under a pooled session fails the next query with a bare <see cref="NpgsqlException"/> that
/// names neither side; the operator needs to know which server to look at. On such a failure
/// both sides are probed on fresh connections and the first that does not answer is named.
/// </summary>
internal sealed class Reachability(LinkSessions sessions)
{
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(5);
    private static readonly PostgresTransientErrors Transient = new();

    public async Task GuardAsync(Func<CancellationToken, Task> action, CancellationToken cancellationToken) =>
        await GuardAsync(async ct => { await action(ct); return true; }, cancellationToken);

    public async Task<T> GuardAsync<T>(Func<CancellationToken, Task<T>> action, CancellationToken cancellationToken)
    {
        try
        {
            return await action(cancellationToken);
        }
        catch (Exception ex) when (IsConnectionFailure(ex) && !cancellationToken.IsCancellationRequested)
        {
            if (await ProbeAsync(ex) is { } unreachable)
            {
                throw unreachable;
            }

            ExceptionDispatchInfo.Throw(ex);
            throw; // Unreachable: Throw does not return.
        }
    }

    private static bool IsConnectionFailure(Exception ex) =>
        // A failure to open is a TealException naming its side already; this is the session that broke.
        ex is NpgsqlException npgsql && (npgsql is not PostgresException || Transient.IsTransient(npgsql));

    /// <summary>The side that does not answer a fresh connection, as an operator error; null when both answer.</summary>
    private async Task<TealException?> ProbeAsync(Exception cause)
    {
        foreach (var side in new[] { Side.Blue, Side.Green })
        {
            var role = LinkSessions.Role(side);
            var connection = sessions.Connection(side);
            using var timeout = new CancellationTokenSource(ProbeTimeout);
            try
            {
                await using var dataSource = PostgresConnections.DataSource(connection, pooling: false);
                await using var session = await PostgresConnections.OpenAsync(dataSource, connection, role, timeout.Token);
            }
            catch (Exception ex) when (ex is TealException or OperationCanceledException)
            {
                var why = ex is TealException teal ? teal.Message : $"{role} ({connection}): no answer within {ProbeTimeout.TotalSeconds:0} s";
                return new TealException(
                    "switchover.server-unreachable",
                    $"{role} cannot be reached: {why}",
                    $"start {role} (or restore the network to it) and check it with `teal check`; nothing was changed that Teal does not undo",
                    cause)
                {
                    Kind = TealErrorKind.Unavailable,
                    Transient = true,
                };
            }
        }

        return null;
    }
}
