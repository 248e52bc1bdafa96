using System.Diagnostics;
using MySqlConnector;

namespace Teal.Testing.Load;

/// <summary>
/// The MySQL-protocol twin of <see cref="ProbeWriter"/>: commits numbered rows through an
/// endpoint as fast as it can, one autocommit INSERT each, reconnecting after any error. Every
/// number the server acknowledged is recorded, so a test can check each one reached the side
/// that took over, and measure the longest gap between two acknowledgements.
/// </summary>
public sealed class MySqlProbeWriter : IAsyncDisposable
{
    public const string Table = "teal_probe";

    private readonly string _connectionString;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<(long N, long Ticks)> _acked = [];
    private readonly List<string> _errors = [];
    private Task? _loop;

    public MySqlProbeWriter(string connectionString)
    {
        // Pooling off: after a drain closes the connection, the next attempt opens a new one.
        _connectionString = new MySqlConnectionStringBuilder(connectionString) { Pooling = false, ConnectionTimeout = 30, DefaultCommandTimeout = 30 }.ConnectionString;
    }

    /// <summary>The CREATE TABLE a test runs on blue (in its database) before the deployment is created.</summary>
    public static string CreateTableSql => $"CREATE TABLE {Table} (n BIGINT PRIMARY KEY, at DATETIME(6) NOT NULL DEFAULT NOW(6)) ENGINE=InnoDB";

    public void Start() => _loop = Task.Run(() => RunAsync(_stop.Token));

    public async Task StopAsync()
    {
        await _stop.CancelAsync();
        if (_loop is not null)
        {
            await _loop;
        }
    }

    public IReadOnlyList<long> Acknowledged
    {
        get
        {
            lock (_acked)
            {
                return [.. _acked.Select(a => a.N)];
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

    /// <summary>The longest time between two consecutive acknowledged commits.</summary>
    public TimeSpan LongestGap
    {
        get
        {
            lock (_acked)
            {
                var longest = 0L;
                for (var i = 1; i < _acked.Count; i++)
                {
                    longest = Math.Max(longest, _acked[i].Ticks - _acked[i - 1].Ticks);
                }

                return Stopwatch.GetElapsedTime(0, longest);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stop.Dispose();
    }

    private async Task RunAsync(CancellationToken stop)
    {
        long n = 0;
        MySqlConnection? connection = null;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                if (connection is null)
                {
                    connection = new MySqlConnection(_connectionString);
                    await connection.OpenAsync(stop);
                }

                n++;
                await using var insert = new MySqlCommand($"INSERT INTO {Table} (n) VALUES (@n)", connection) { Parameters = { new("@n", n) } };
                // Not cancelled by Stop: the loop ends after this INSERT, whose outcome is then known.
                await insert.ExecuteNonQueryAsync(CancellationToken.None);
                lock (_acked)
                {
                    _acked.Add((n, Stopwatch.GetTimestamp()));
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex) when (ex is MySqlException or IOException or System.Net.Sockets.SocketException or TimeoutException or InvalidOperationException)
            {
                // The outcome of this n is unknown (it may have committed); it is not counted as
                // acknowledged, and the next attempt uses a new number.
                lock (_errors)
                {
                    _errors.Add(ex.Message);
                }

                if (connection is not null)
                {
                    await connection.DisposeAsync();
                    connection = null;
                }

                await Task.Delay(5, CancellationToken.None);
            }
        }

        if (connection is not null)
        {
            await connection.DisposeAsync();
        }
    }
}
