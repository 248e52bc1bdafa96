using System.Data.Common;
using System.Diagnostics;

namespace Teal.Testing.Load;

/// <summary>
/// Commits numbered rows through an endpoint as fast as it can, one autocommit INSERT each,
/// reconnecting after any error — an application that must not lose writes. Every
/// acknowledged number is recorded with the moment its commit returned, so a test can check
/// that each one reached green and measure the longest gap between two acknowledged commits.
/// Each engine's writer (<see cref="ProbeWriter"/>, <see cref="MySqlProbeWriter"/>) gives its
/// client library's connection, INSERT and connection errors.
/// </summary>
public abstract class ProbeWriterBase : IAsyncDisposable
{
    public const string Table = "teal_probe";

    private readonly CancellationTokenSource _stop = new();
    private readonly List<(long N, long Ticks)> _acked = [];
    private readonly List<string> _errors = [];
    // Wall clock and Stopwatch read together, to place acknowledgements on the wall clock.
    private readonly DateTimeOffset _wallAtStart = DateTimeOffset.UtcNow;
    private readonly long _ticksAtStart = Stopwatch.GetTimestamp();
    private Task? _loop;

    /// <summary>The number of the first row (several probes on one table take ranges apart).</summary>
    protected long FirstNumber { get; init; } = 1;

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

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        _stop.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>A new, unopened connection (pooling off: after a drain closes one, the next attempt must open a new socket).</summary>
    protected abstract DbConnection NewConnection();

    /// <summary>The INSERT of number <paramref name="n"/> into <see cref="Table"/>.</summary>
    protected abstract DbCommand Insert(DbConnection connection, long n);

    /// <summary>A failure after which the connection is given up and the writer reconnects.</summary>
    protected abstract bool IsConnectionFailure(Exception ex);

    /// <summary>
    /// Wall-clock moments of the two acknowledgements around <see cref="LongestGapOverlapping"/>,
    /// to see how much of that gap lay before the pause and after the resume.
    /// </summary>
    public (DateTimeOffset From, DateTimeOffset To)? LongestGapOverlappingWindow(DateTimeOffset from, DateTimeOffset to)
    {
        lock (_acked)
        {
            var at = LongestGapEndLocked(i => Wall(_acked[i].Ticks) > from && Wall(_acked[i - 1].Ticks) < to);
            return at < 0 ? null : (Wall(_acked[at - 1].Ticks), Wall(_acked[at].Ticks));
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

    private async Task RunAsync(CancellationToken stop)
    {
        var n = FirstNumber - 1;
        DbConnection? connection = null;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                if (connection is null)
                {
                    connection = NewConnection();
                    await connection.OpenAsync(stop);
                }

                n++;
                await using var insert = Insert(connection, n);
                // Not cancelled by Stop: cancelling sends a CancelRequest (PostgreSQL: through
                // PgBouncer, on a new server connection) and the INSERT's acknowledgement then
                // arrives up to a second late, a gap the probe itself made. The loop ends after
                // this INSERT, whose outcome is then known.
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
            catch (Exception ex) when (IsConnectionFailure(ex))
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
