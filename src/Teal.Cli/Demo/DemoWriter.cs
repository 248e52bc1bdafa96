using Npgsql;

namespace Teal.Cli.Demo;

/// <summary>
/// The demo's application: a few clients committing numbered rows through the endpoint, one
/// autocommit INSERT each, reconnecting after an error as a connection pool would. It records
/// every acknowledged number, so the demo can show that each one reached green.
/// </summary>
internal sealed class DemoWriter : IAsyncDisposable
{
    public const string Table = "demo_writes";

    private readonly string _connectionString;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<long> _acked = [];
    private readonly List<Task> _clients = [];
    private long _next;
    private long _errors;

    public DemoWriter(string connectionString, int clients)
    {
        // No pool: after the switchover's drain closes a connection, the next try opens a new one.
        _connectionString = new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false, Timeout = 30, CommandTimeout = 30 }.ConnectionString;
        for (var i = 0; i < clients; i++)
        {
            _clients.Add(Task.Run(() => RunAsync(_stop.Token)));
        }
    }

    public static string CreateTableSql => $"CREATE TABLE {Table} (n bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())";

    /// <summary>Statements that failed (not acknowledged, so not expected on green) and were retried.</summary>
    public long Errors => Interlocked.Read(ref _errors);

    public IReadOnlyList<long> Acknowledged
    {
        get
        {
            lock (_acked)
            {
                return [.. _acked];
            }
        }
    }

    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_clients);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stop.Dispose();
    }

    private async Task RunAsync(CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await using var connection = new NpgsqlConnection(_connectionString);
                await connection.OpenAsync(stop);
                while (!stop.IsCancellationRequested)
                {
                    var n = Interlocked.Increment(ref _next);
                    await using var insert = new NpgsqlCommand($"INSERT INTO {Table} (n) VALUES ($1)", connection) { Parameters = { new() { Value = n } } };
                    // Not cancelled by stop: a commit in flight finishes, so its outcome is known.
                    await insert.ExecuteNonQueryAsync(CancellationToken.None);
                    lock (_acked)
                    {
                        _acked.Add(n);
                    }

                    // About 100 writes a second per client: a steady application, not a benchmark.
                    await Task.Delay(10, stop);
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is NpgsqlException or IOException or TimeoutException)
            {
                Interlocked.Increment(ref _errors);
                await Task.Delay(50, CancellationToken.None);
            }
        }
    }

    /// <summary>Acknowledged numbers missing from <paramref name="present"/>.</summary>
    public IReadOnlyList<long> Missing(IReadOnlySet<long> present) => [.. Acknowledged.Where(n => !present.Contains(n))];
}
