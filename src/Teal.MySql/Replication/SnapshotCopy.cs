using System.Collections.Concurrent;
using MySqlConnector;
using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.MySql.Connections;

namespace Teal.MySql.Replication;

/// <summary>Where a consistent snapshot of blue stands in its binlog.</summary>
internal sealed record SnapshotPosition(string File, long Position, string Gtid);

/// <summary>
/// Copies blue's rows into green from one consistent snapshot and returns the GTID position of
/// that snapshot, from which green then replicates. MariaDB gives the binlog position of
/// <c>START TRANSACTION WITH CONSISTENT SNAPSHOT</c> (<c>binlog_snapshot_file/position</c>) without
/// any lock, and <c>BINLOG_GTID_POS</c> turns it into a GTID position. Rows stream table by
/// table with <c>LOAD DATA LOCAL</c> (MySqlBulkCopy) into unlogged sessions on green, so
/// progress is known per table.
/// </summary>
internal sealed class SnapshotCopy(LinkSessions sessions)
{
    private readonly ConcurrentDictionary<string, TableProgress> _progress = new(StringComparer.Ordinal);

    /// <summary>Per-table state of the copy running or last run in this process.</summary>
    public IReadOnlyList<TableProgress> Progress => _progress.Values.OrderBy(p => p.Table, StringComparer.Ordinal).ToList();

    public async Task<SnapshotPosition> CopyAsync(CancellationToken cancellationToken)
    {
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        // The snapshot: REPEATABLE READ, opened with the binlog position it corresponds to.
        await Sql.ExecuteAsync(blue, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", cancellationToken);
        await Sql.ExecuteAsync(blue, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", cancellationToken);
        var status = (await Sql.RowsAsync(blue, "SHOW STATUS LIKE 'binlog_snapshot_%'", cancellationToken)).ToDictionary(r => r["Variable_name"]!, r => r["Value"], StringComparer.OrdinalIgnoreCase);
        var file = status.GetValueOrDefault("Binlog_snapshot_file") ?? string.Empty;
        var position = long.Parse(status.GetValueOrDefault("Binlog_snapshot_position") ?? "0", System.Globalization.CultureInfo.InvariantCulture);
        var gtid = await Sql.StringAsync(blue, "SELECT BINLOG_GTID_POS(@f, @p)", cancellationToken, ("@f", file), ("@p", position)) ?? string.Empty;

        var tables = await TealObjects.TablesAsync(blue, await TealObjects.UserSchemasAsync(blue, sessions.Schema, cancellationToken), cancellationToken);
        foreach (var t in tables)
        {
            _progress[t.FullName] = new TableProgress(t.FullName, TableCopyState.Pending) { Rows = 0 };
        }

        await using var green = await sessions.OpenUnloggedAsync(Side.Green, cancellationToken);
        await Sql.ExecuteAsync(green, "SET SESSION foreign_key_checks = 0, unique_checks = 0", cancellationToken);
        foreach (var table in tables)
        {
            await CopyTableAsync(blue, green, table, cancellationToken);
        }

        await Sql.ExecuteAsync(blue, "COMMIT", cancellationToken);
        return new SnapshotPosition(file, position, gtid);
    }

    /// <summary>Marks every table ready (after a restart, when the copy is known to have completed).</summary>
    public void MarkAllReady(IEnumerable<string> tables)
    {
        foreach (var t in tables)
        {
            _progress[t] = new TableProgress(t, TableCopyState.Ready);
        }
    }

    /// <summary>Copied tables become Ready once green replicates (the workflow's COPY_DATA ends there).</summary>
    public void MarkReady()
    {
        foreach (var (key, value) in _progress)
        {
            _progress[key] = value with { State = TableCopyState.Ready };
        }
    }

    private async Task CopyTableAsync(MySqlConnection blue, MySqlConnection green, TableInfo table, CancellationToken cancellationToken)
    {
        _progress[table.FullName] = new TableProgress(table.FullName, TableCopyState.Copying) { Rows = 0 };
        var columns = (await TealObjects.ColumnsAsync(blue, table.Schema, table.Name, cancellationToken)).Where(c => !c.Generated).ToList();
        await using var select = new MySqlCommand($"SELECT {string.Join(", ", columns.Select(c => Sql.Id(c.Name)))} FROM {table.Quoted}", blue);
        await using var reader = await select.ExecuteReaderAsync(cancellationToken);
        var bulk = new MySqlBulkCopy(green)
        {
            DestinationTableName = table.Quoted,
            BulkCopyTimeout = 0,
            NotifyAfter = 5000,
        };
        for (var i = 0; i < columns.Count; i++)
        {
            bulk.ColumnMappings.Add(new MySqlBulkCopyColumnMapping(i, columns[i].Name));
        }

        bulk.MySqlRowsCopied += (_, e) => _progress[table.FullName] = new TableProgress(table.FullName, TableCopyState.Copying) { Rows = e.RowsCopied };
        var result = await bulk.WriteToServerAsync(reader, cancellationToken);
        _progress[table.FullName] = new TableProgress(table.FullName, TableCopyState.Copied) { Rows = result.RowsInserted, Bytes = table.DataBytes };
    }
}
