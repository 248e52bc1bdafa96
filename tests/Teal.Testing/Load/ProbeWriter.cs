using System.Diagnostics;
using Npgsql;

namespace Teal.Testing.Load;

/// <summary>
/// Commits numbered rows through an endpoint as fast as it can, one autocommit INSERT each,
/// reconnecting after any error — an application that must not lose writes. Every
/// acknowledged number is recorded with the moment its commit returned, so a test can check
/// that each one reached green and measure the longest gap between two acknowledged commits.
/// </summary>
public sealed class ProbeWriter : IAsyncDisposable
{
    public const string Table = "teal_probe";

    private readonly string _connectionString;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<(long N, long Ticks)> _acked = [];
    private readonly List<string> _errors = [];
    // Wall clock and Stopwatch read together, to place acknowledgements on the wall clock.
    private readonly DateTimeOffset _wallAtStart = DateTimeOffset.UtcNow;
    private readonly long _ticksAtStart = Stopwatch.GetTimestamp();
    private readonly long _firstNumber;
    private Task? _loop;

    /// <summary>Writes rows numbered from <paramref name="firstNumber"/> (several probes on one table take ranges apart).</summary>
    public ProbeWriter(string connectionString, long firstNumber = 1)
    {
        _firstNumber = firstNumber;
        // Pooling off: after a drain closes the connection, the next attempt must open a new one
        // (a pooled connection would be a dead socket first).
        _connectionString = new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false, Timeout = 30, CommandTimeout = 30 }.ConnectionString;
    }

    /// <summary>The CREATE TABLE a test runs on blue before the deployment is created.</summary>
    public static string CreateTableSql => $"CREATE TABLE {Table} (n bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())";

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
                var at = LongestGapEndLocked(_ => true);
                return at < 0 ? TimeSpan.Zero : Stopwatch.GetElapsedTime(_acked[at - 1].Ticks, _acked[at].Ticks);
            }
        }
    }

    /// <summary>
    /// Wall-clock moments of the two acknowledgements around <see cref="LongestGap"/> (null with
    /// fewer than two), to line the gap up with the switchover's own pause and resume times.
    /// </summary>
    public (DateTimeOffset From, DateTimeOffset To)? LongestGapWindow
    {
        get
        {
            lock (_acked)
            {
                var at = LongestGapEndLocked(_ => true);
                return at < 0 ? null : (Wall(_acked[at - 1].Ticks), Wall(_acked[at].Ticks));
            }
        }
    }

    /// <summary>
    /// The longest time between two consecutive acknowledged commits whose interval overlaps
    /// [<paramref name="from"/>, <paramref name="to"/>] (wall clock): the write pause an
    /// application saw at a switchover that paused clients over that window. Null when no
    /// interval overlaps it.
    /// </summary>
    public TimeSpan? LongestGapOverlapping(DateTimeOffset from, DateTimeOffset to)
    {
        lock (_acked)
        {
            var at = LongestGapEndLocked(i => Wall(_acked[i].Ticks) > from && Wall(_acked[i - 1].Ticks) < to);
            return at < 0 ? null : Stopwatch.GetElapsedTime(_acked[at - 1].Ticks, _acked[at].Ticks);
        }
    }

    /// <summary>Index i of the longest interval (acknowledgement i-1 to i) that <paramref name="include"/> accepts; -1 for none.</summary>
    private int LongestGapEndLocked(Func<int, bool> include)
    {
        var at = -1;
        for (var i = 1; i < _acked.Count; i++)
        {
            if (include(i) && (at < 0 || _acked[i].Ticks - _acked[i - 1].Ticks > _acked[at].Ticks - _acked[at - 1].Ticks))
            {
                at = i;
            }
        }

        return at;
    }

    private DateTimeOffset Wall(long ticks) => _wallAtStart + Stopwatch.GetElapsedTime(_ticksAtStart, ticks);

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stop.Dispose();
    }

    private async Task RunAsync(CancellationToken stop)
    {
        var n = _firstNumber - 1;
        NpgsqlConnection? connection = null;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                if (connection is null)
                {
                    connection = new NpgsqlConnection(_connectionString);
                    await connection.OpenAsync(stop);
                }

                n++;
                await using var insert = new NpgsqlCommand($"INSERT INTO {Table} (n) VALUES ($1)", connection) { Parameters = { new() { Value = n } } };
                // Not cancelled by Stop: cancelling sends a CancelRequest (through PgBouncer, on a
                // new server connection) and the INSERT's acknowledgement then arrives up to a
                // second late, a gap the probe itself made. The loop ends after this INSERT.
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
            catch (Exception ex) when (ex is NpgsqlException or IOException or TimeoutException or InvalidOperationException)
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
