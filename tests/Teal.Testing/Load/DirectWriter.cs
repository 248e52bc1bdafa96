using Npgsql;

namespace Teal.Testing.Load;

/// <summary>
/// A client connected straight to a server (not through an endpoint) that tries to write on a
/// fixed beat whatever the server says: <c>BEGIN READ WRITE</c> (so a read-only default does not
/// stop it), its session kept open, a new one opened after any error. After every acknowledged
/// commit it reads the server's WAL insert position in the same session: an upper bound of
/// that commit's position, to compare with blue's final position. Stands for the application
/// that was never moved to the endpoint.
/// </summary>
public sealed class DirectWriter(string connectionString, TimeSpan interval) : IAsyncDisposable
{
    public const string Table = "teal_direct";

    private readonly string _connectionString = new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false, Timeout = 5, CommandTimeout = 10 }.ConnectionString;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Ack> _acked = [];
    private readonly List<string> _errors = [];
    private Task? _loop;

    /// <summary>One acknowledged commit; <paramref name="UpperBound"/> is null when the session ended before it could be read.</summary>
    public sealed record Ack(long N, string? UpperBound);

    public static string CreateTableSql => $"CREATE TABLE {Table} (n bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())";

    public IReadOnlyList<Ack> Acknowledged
    {
        get
        {
            lock (_acked)
            {
                return [.. _acked];
            }
        }
    }

    public IReadOnlyList<string> Errors
    {
        get
        {
            lock (_errors)
            {
                return [.. _errors];
            }
        }
    }

    public void Start() => _loop = Task.Run(() => RunAsync(_stop.Token));

    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        if (_loop is not null)
        {
            await _loop;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stop.Dispose();
    }

    private async Task RunAsync(CancellationToken cancellationToken)
    {
        NpgsqlConnection? connection = null;
        long n = 0;
        try
        {
            while (!cancellationToken.IsCancellationRequested)
            {
                n++;
                var committed = false;
                try
                {
                    if (connection is null)
                    {
                        connection = new NpgsqlConnection(_connectionString);
                        await connection.OpenAsync(cancellationToken);
                    }

                    await using (var write = new NpgsqlCommand($"BEGIN READ WRITE; INSERT INTO {Table} (n) VALUES ({n}); COMMIT", connection))
                    {
                        await write.ExecuteNonQueryAsync(cancellationToken);
                    }

                    committed = true;
                    await using var position = new NpgsqlCommand("SELECT pg_current_wal_insert_lsn()::text", connection);
                    var upperBound = (string?)await position.ExecuteScalarAsync(cancellationToken);
                    Record(new Ack(n, upperBound));
                }
                catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException or IOException or TimeoutException)
                {
                    if (committed)
                    {
                        Record(new Ack(n, null));
                    }

                    lock (_errors)
                    {
                        _errors.Add(ex is PostgresException pg ? $"{pg.SqlState}: {pg.MessageText}" : ex.Message);
                    }

                    if (connection is not null)
                    {
                        await connection.DisposeAsync();
                        connection = null;
                    }
                }

                await Task.Delay(interval, cancellationToken);
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        finally
        {
            if (connection is not null)
            {
                await connection.DisposeAsync();
            }
        }
    }

    private void Record(Ack ack)
    {
        lock (_acked)
        {
            _acked.Add(ack);
        }
    }

    /// <summary>A PostgreSQL LSN ("16/B374D848") as a number, to compare positions.</summary>
    public static ulong Lsn(string text)
    {
        var parts = text.Split('/');
        return (Convert.ToUInt64(parts[0], 16) << 32) + Convert.ToUInt64(parts[1], 16);
    }
}
