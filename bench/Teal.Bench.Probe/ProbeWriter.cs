using System.Data.Common;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Teal.Bench.Probe;

/// <summary>One acknowledged commit: the row's number and when the acknowledgement arrived (Unix ms).</summary>
public sealed record ProbeAck(long N, double AtMs);

/// <summary>A failed insert or connect: the number it was for, when, and what the client saw.</summary>
public sealed record ProbeError(long N, double AtMs, string Message);

/// <summary>The figures a switchover bench reads first: acknowledged rows, errors, and the longest gap between two acknowledgements.</summary>
public sealed record ProbeSummary(long Acked, long Errors, double LongestGapMs, double LongestGapStartMs, double StartedMs, double StoppedMs);

public sealed record ProbeReport(int IntervalMs, ProbeSummary Summary, IReadOnlyList<ProbeAck> Acks, IReadOnlyList<ProbeError> Errors)
{
    /// <summary>The background load's figures when <c>--load</c> ran alongside the probe; null otherwise.</summary>
    public LoadSummary? Load { get; init; }
}

public static class ProbeJson
{
    public static JsonSerializerOptions Options { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };
}

/// <summary>
/// Writes numbered rows at a steady rate on one connection and records every acknowledgement.
/// A failed row is never retried under the same number: whether its commit happened is unknown,
/// and the bench only asks that every acknowledged number exists afterwards.
/// </summary>
/// <param name="connect">A new, unopened connection (PostgreSQL or the MySQL family) through the endpoint under test.</param>
/// <param name="interval">Time between the starts of two inserts.</param>
/// <param name="time">The clock.</param>
public sealed class ProbeWriter(Func<DbConnection> connect, TimeSpan interval, TimeProvider time)
{
    private static readonly TimeSpan ReconnectPause = TimeSpan.FromMilliseconds(5);

    private readonly List<ProbeAck> _acks = [];
    private readonly List<ProbeError> _errors = [];

    public async Task<ProbeReport> RunAsync(CancellationToken stop)
    {
        var started = NowMs();
        var n = 0L;
        DbConnection? connection = null;
        var next = time.GetTimestamp();
        while (!stop.IsCancellationRequested)
        {
            n++;
            try
            {
                if (connection is null)
                {
                    connection = connect();
                    await connection.OpenAsync(CancellationToken.None);
                }

                await using (var insert = connection.CreateCommand())
                {
                    // @n: a named parameter both Npgsql and MySqlConnector take.
                    insert.CommandText = "INSERT INTO probe (n) VALUES (@n)";
                    var parameter = insert.CreateParameter();
                    parameter.ParameterName = "@n";
                    parameter.Value = n;
                    insert.Parameters.Add(parameter);
                    // Not cancellable by stop: an insert in flight finishes, so its outcome is known.
                    await insert.ExecuteNonQueryAsync(CancellationToken.None);
                }

                _acks.Add(new ProbeAck(n, NowMs()));
            }
            // Any failure of the client (MySqlConnector lets a broken pipe out as a bare SocketException)
            // is an error the application saw: counted, then a new connection.
            catch (Exception ex) when (ex is DbException or InvalidOperationException or TimeoutException or IOException or System.Net.Sockets.SocketException)
            {
                _errors.Add(new ProbeError(n, NowMs(), ex.Message));
                if (connection is not null)
                {
                    await connection.DisposeAsync();
                    connection = null;
                }

                await DelayAsync(ReconnectPause, stop);
                continue;
            }

            // A steady schedule: a slow commit is followed at once by the next, not by a full interval.
            next += (long)(interval.TotalSeconds * time.TimestampFrequency);
            var wait = time.GetElapsedTime(time.GetTimestamp(), next);
            if (wait > TimeSpan.Zero)
            {
                await DelayAsync(wait, stop);
            }
            else
            {
                next = time.GetTimestamp();
            }
        }

        if (connection is not null)
        {
            await connection.DisposeAsync();
        }

        return new ProbeReport((int)interval.TotalMilliseconds, Summarize(started, NowMs()), _acks, _errors);
    }

    private ProbeSummary Summarize(double started, double stopped)
    {
        var longest = 0.0;
        var longestStart = 0.0;
        for (var i = 1; i < _acks.Count; i++)
        {
            var gap = _acks[i].AtMs - _acks[i - 1].AtMs;
            if (gap > longest)
            {
                longest = gap;
                longestStart = _acks[i - 1].AtMs;
            }
        }

        return new ProbeSummary(_acks.Count, _errors.Count, Math.Round(longest, 3), longestStart, started, stopped);
    }

    private double NowMs() => (time.GetUtcNow() - DateTimeOffset.UnixEpoch).TotalMilliseconds;

    private async Task DelayAsync(TimeSpan delay, CancellationToken stop)
    {
        try
        {
            await Task.Delay(delay, time, stop);
        }
        catch (OperationCanceledException)
        {
            // Stopping: the loop condition ends the run.
        }
    }
}
