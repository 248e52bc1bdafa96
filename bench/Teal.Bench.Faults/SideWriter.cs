using Npgsql;

namespace Teal.Bench.Faults;

/// <summary>
/// A client connected straight to one server (not through an endpoint), as the superuser, that
/// tries a write every <see cref="Interval"/> and does everything a client can to get past a
/// fence: <c>BEGIN READ WRITE</c> after <c>SET default_transaction_read_only = off</c>. It
/// reconnects after any error. Every acknowledged commit is kept with its wall-clock moment, so
/// the run can tell when a side accepted writes and whether each acknowledged row survived.
/// </summary>
internal sealed class SideWriter(string side, string connectionString, long firstNumber) : IAsyncDisposable
{
    public const string Table = "teal_fault_direct";

    public static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(50);

    private readonly string _connectionString = new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false, Timeout = 5, CommandTimeout = 10 }.ConnectionString;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<(long N, DateTimeOffset At)> _acked = [];
    private int _errors;
    private Task? _loop;

    public static string CreateTableSql => $"CREATE TABLE {Table} (n bigint PRIMARY KEY, side text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())";

    public string Side => side;

    public int Errors => Volatile.Read(ref _errors);

    public IReadOnlyList<(long N, DateTimeOffset At)> Acknowledged
    {
        get
        {
            lock (_acked)
            {
                return [.. _acked];
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

    private async Task RunAsync(CancellationToken stop)
    {
        var n = firstNumber;
        NpgsqlConnection? connection = null;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                if (connection is null)
                {
                    connection = new NpgsqlConnection(_connectionString);
                    await connection.OpenAsync(stop);
                    await using var off = new NpgsqlCommand("SET default_transaction_read_only = off", connection);
                    await off.ExecuteNonQueryAsync(stop);
                }

                n++;
                await using var write = new NpgsqlCommand($"BEGIN READ WRITE; INSERT INTO {Table} (n, side) VALUES ({n}, '{side}'); COMMIT", connection);
                await write.ExecuteNonQueryAsync(CancellationToken.None);
                lock (_acked)
                {
                    _acked.Add((n, DateTimeOffset.UtcNow));
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex) when (ex is NpgsqlException or IOException or TimeoutException or InvalidOperationException)
            {
                // Refused (fenced, terminated, cannot log in) or unknown: not acknowledged.
                Interlocked.Increment(ref _errors);
                if (connection is not null)
                {
                    await connection.DisposeAsync();
                    connection = null;
                }
            }

            try
            {
                await Task.Delay(Interval, stop);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }

        if (connection is not null)
        {
            await connection.DisposeAsync();
        }
    }
}
