using System.Collections.Concurrent;
using System.Globalization;
using MySqlConnector;
using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.MySql.Connections;

namespace Teal.MySql.Replication;

/// <summary>
/// Replication figures read now: the copy's per-table progress, the replica threads' health,
/// lag in binlog bytes and in GTID transactions (blue's position against what green executed),
/// lag in seconds (the heartbeat row Teal writes on blue every second, as green has it), and the
/// DDL statements blue's binlog carried since the last read. DDL is not a degradation here: row
/// binlogs carry it and green applies it.
/// </summary>
internal sealed class StatusReader(LinkSessions sessions, ReplicationSetup setup, SnapshotCopy copy, TimeProvider time)
{
    private const int DdlKept = 50;

    private readonly ConcurrentQueue<DateTime> _written = new();
    private readonly ConcurrentQueue<PendingDdl> _ddl = new();
    private int _scanning;
    private (string File, long Position)? _cursor;
    private long _nextDdlId = 1;

    public async Task WriteHeartbeatAsync(CancellationToken cancellationToken)
    {
        // Microseconds, as DATETIME(6) keeps them, so what green reads back compares equal.
        var now = time.GetUtcNow().UtcDateTime;
        now = new DateTime(now.Ticks - (now.Ticks % 10), DateTimeKind.Utc);
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        try
        {
            // Nothing is written on a fenced blue: the final position recorded at switchover stays final.
            var written = await Sql.ExecuteAsync(
                blue,
                $"INSERT INTO {TealObjects.Heartbeat(sessions.Schema)} (id, at) SELECT 1, @at FROM DUAL WHERE @@global.read_only = 0 ON DUPLICATE KEY UPDATE at = VALUES(at)",
                cancellationToken,
                ("@at", now));
            if (written > 0)
            {
                _written.Enqueue(now);
                while (_written.Count > 600 && _written.TryDequeue(out _))
                {
                }
            }
        }
        catch (MySqlException ex) when (ex.ErrorCode is MySqlErrorCode.NoSuchTable or MySqlErrorCode.UnknownDatabase)
        {
            // Before the schema copy there is no heartbeat table yet.
        }
    }

    public async Task<ReplicationSnapshot> ReadAsync(CancellationToken cancellationToken)
    {
        if (setup.CopyFailure is { } failure)
        {
            return new ReplicationSnapshot(ReplicationState.Stopped) { Reason = failure, Tables = copy.Progress };
        }

        if (setup.Copying)
        {
            return new ReplicationSnapshot(ReplicationState.Syncing) { Tables = Pending(copy.Progress), WorkerRunning = true };
        }

        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var replica = await setup.OursAsync(green, cancellationToken);
        if (replica is null)
        {
            return new ReplicationSnapshot(ReplicationState.Syncing) { Reason = "green does not replicate yet", Tables = Pending(copy.Progress) };
        }

        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        var master = await Sql.RowAsync(blue, "SHOW MASTER STATUS", cancellationToken);
        var blueGtid = GtidPosition.Parse(await Sql.StringAsync(blue, "SELECT @@global.gtid_binlog_pos", cancellationToken));
        var greenGtid = GtidPosition.Parse(await Sql.StringAsync(green, "SELECT @@global.gtid_slave_pos", cancellationToken));
        var lagBytes = master is null ? (long?)null : await LagBytesAsync(blue, master["File"]!, long.Parse(master["Position"]!, CultureInfo.InvariantCulture), replica, cancellationToken);
        var lagSeconds = await LagSecondsAsync(green, cancellationToken);
        var ddl = master is null ? [] : await ScanDdlAsync(blue, master["File"]!, cancellationToken);

        var state = replica.Error is not null || !replica.IoRunning || !replica.SqlRunning ? ReplicationState.Stopped : ReplicationState.Replicating;
        var reason = replica.Error is { } error
            ? $"green's replication stopped: {error}"
            : state == ReplicationState.Stopped ? $"green's replication threads are not running (IO {(replica.IoRunning ? "yes" : "no")}, SQL {(replica.SqlRunning ? "yes" : "no")})" : null;
        return new ReplicationSnapshot(state)
        {
            Reason = reason,
            LagBytes = lagBytes,
            LagTransactions = blueGtid.DistanceFrom(greenGtid),
            LagSeconds = lagSeconds,
            WorkerRunning = replica.IoRunning && replica.SqlRunning,
            Tables = copy.Progress.Count == 0 ? [] : copy.Progress,
            ReplicatedDdl = ddl,
        };
    }

    /// <summary>While nothing is known yet, one pending entry, so "all tables ready" cannot hold before the copy started.</summary>
    private static IReadOnlyList<TableProgress> Pending(IReadOnlyList<TableProgress> progress) =>
        progress.Count > 0 ? progress : [new TableProgress("(consistent snapshot)", TableCopyState.Pending)];

    /// <summary>Bytes of blue's binlog between what green executed and blue's end.</summary>
    private static async Task<long?> LagBytesAsync(MySqlConnection blue, string blueFile, long bluePosition, ReplicaStatus replica, CancellationToken cancellationToken)
    {
        if (replica.ExecutedFile is null or "")
        {
            return null;
        }

        if (replica.ExecutedFile == blueFile)
        {
            return Math.Max(0, bluePosition - replica.ExecutedPosition);
        }

        var logs = await Sql.RowsAsync(blue, "SHOW BINARY LOGS", cancellationToken);
        long lag = 0;
        var counting = false;
        foreach (var log in logs)
        {
            var name = log["Log_name"]!;
            var size = long.Parse(log["File_size"]!, CultureInfo.InvariantCulture);
            if (name == replica.ExecutedFile)
            {
                counting = true;
                lag += Math.Max(0, size - replica.ExecutedPosition);
            }
            else if (name == blueFile)
            {
                lag += bluePosition;
                break;
            }
            else if (counting)
            {
                lag += size;
            }
        }

        return lag;
    }

    /// <summary>
    /// How long ago blue got the oldest heartbeat green does not have yet (0 when green has the
    /// newest one). After a restart of Teal, before any heartbeat was written, the age of
    /// green's row is the bound.
    /// </summary>
    private async Task<double?> LagSecondsAsync(MySqlConnection green, CancellationToken cancellationToken)
    {
        object? value;
        try
        {
            value = await Sql.ScalarAsync(green, $"SELECT at FROM {TealObjects.Heartbeat(sessions.Schema)} WHERE id = 1", cancellationToken);
        }
        catch (MySqlException ex) when (ex.ErrorCode is MySqlErrorCode.NoSuchTable or MySqlErrorCode.UnknownDatabase)
        {
            return null;
        }

        if (value is not DateTime applied)
        {
            return null;
        }

        applied = DateTime.SpecifyKind(applied, DateTimeKind.Utc);
        var now = time.GetUtcNow().UtcDateTime;
        var written = _written.ToArray();
        if (written.Length == 0)
        {
            return Math.Max(0, (now - applied).TotalSeconds);
        }

        var missing = written.Where(w => w > applied).ToList();
        return missing.Count == 0 ? 0 : Math.Max(0, (now - missing.Min()).TotalSeconds);
    }

    /// <summary>
    /// Query events in blue's binlog since the last read (row events carry data; statements
    /// left in a row binlog are DDL and the like). Each is reported once.
    /// </summary>
    private async Task<IReadOnlyList<PendingDdl>> ScanDdlAsync(MySqlConnection blue, string currentFile, CancellationToken cancellationToken)
    {
        if (Interlocked.Exchange(ref _scanning, 1) == 1)
        {
            return _ddl.ToArray();
        }

        try
        {
            if (_cursor is null)
            {
                var master = await Sql.RowAsync(blue, "SHOW MASTER STATUS", cancellationToken);
                _cursor = (master!["File"]!, long.Parse(master["Position"]!, CultureInfo.InvariantCulture));
                return _ddl.ToArray();
            }

            for (var round = 0; round < 20; round++)
            {
                var (file, position) = _cursor.Value;
                var events = await Sql.RowsAsync(blue, $"SHOW BINLOG EVENTS IN {Sql.Literal(file)} FROM {position.ToString(CultureInfo.InvariantCulture)} LIMIT 1000", cancellationToken);
                foreach (var e in events)
                {
                    if (e["Event_type"] == "Query" && IsDdl(e["Info"]) is { } statement)
                    {
                        _ddl.Enqueue(new PendingDdl(_nextDdlId++, time.GetUtcNow(), CommandTag(statement), statement));
                        while (_ddl.Count > DdlKept && _ddl.TryDequeue(out _))
                        {
                        }
                    }

                    _cursor = (file, long.Parse(e["End_log_pos"]!, CultureInfo.InvariantCulture));
                }

                if (events.Count == 1000)
                {
                    continue;
                }

                if (file == currentFile)
                {
                    break;
                }

                // The file rotated: go on with the next one.
                var logs = (await Sql.RowsAsync(blue, "SHOW BINARY LOGS", cancellationToken)).Select(r => r["Log_name"]!).ToList();
                var next = logs.IndexOf(file) + 1;
                if (next <= 0 || next >= logs.Count)
                {
                    // Purged under us: continue from the end.
                    var master = await Sql.RowAsync(blue, "SHOW MASTER STATUS", cancellationToken);
                    _cursor = (master!["File"]!, long.Parse(master["Position"]!, CultureInfo.InvariantCulture));
                    break;
                }

                _cursor = (logs[next], 4);
            }
        }
        catch (MySqlException)
        {
            // The file was purged between the listing and the read; start again from the end next time.
            _cursor = null;
        }
        finally
        {
            Volatile.Write(ref _scanning, 0);
        }

        return _ddl.ToArray();
    }

    private string? IsDdl(string? info)
    {
        if (string.IsNullOrWhiteSpace(info))
        {
            return null;
        }

        var statement = info.Trim();
        // "use `db`; CREATE TABLE …" names the default schema first.
        if (statement.StartsWith("use ", StringComparison.OrdinalIgnoreCase) && statement.IndexOf("; ", StringComparison.Ordinal) is var semi and > 0)
        {
            statement = statement[(semi + 2)..].Trim();
        }

        var upper = statement.ToUpperInvariant();
        if (upper.StartsWith("BEGIN", StringComparison.Ordinal) || upper.StartsWith("COMMIT", StringComparison.Ordinal) || upper.StartsWith("ROLLBACK", StringComparison.Ordinal) || upper.StartsWith("SAVEPOINT", StringComparison.Ordinal) || upper.StartsWith("XA ", StringComparison.Ordinal))
        {
            return null;
        }

        return statement.Contains(sessions.Schema, StringComparison.Ordinal) ? null : statement;
    }

    private static string CommandTag(string statement)
    {
        var words = statement.Split((char[]?)null, 3, StringSplitOptions.RemoveEmptyEntries);
        return string.Join(' ', words.Take(words.Length > 1 && words[0].ToUpperInvariant() is "CREATE" or "ALTER" or "DROP" or "RENAME" or "TRUNCATE" ? 2 : 1)).ToUpperInvariant();
    }
}
