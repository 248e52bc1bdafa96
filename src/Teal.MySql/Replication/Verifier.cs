using System.Diagnostics;
using System.Globalization;
using MySqlConnector;
using Teal.Core.Engines;
using Teal.MySql.Connections;

namespace Teal.MySql.Replication;

/// <summary>
/// Compares blue and green at exactly one GTID position, under load: green's replication is
/// stopped, blue opens a consistent snapshot whose GTID position <c>P</c> MariaDB reports, green
/// replicates <c>UNTIL master_gtid_pos = P</c> and stops there, and both sides are then read
/// from that same point. Per table, rows are counted and checksummed per primary-key chunk with
/// an order-independent aggregate (<c>BIT_XOR</c> and <c>SUM</c> of each row's <c>CRC32</c>; CHECKSUM
/// TABLE is not stable across versions), both sides read at once. Replication resumes at the end.
/// </summary>
internal sealed class Verifier(LinkSessions sessions, ReplicationSetup setup)
{
    private const long ChunkRows = 200_000;

    public async Task<VerifyReport> VerifyAsync(IProgress<TableVerification>? progress, CancellationToken cancellationToken)
    {
        var started = Stopwatch.StartNew();
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var replicating = await setup.OursAsync(green, cancellationToken) is not null;
        if (replicating)
        {
            // Stopped before blue's snapshot, green cannot be past the snapshot's position.
            await Sql.ExecuteAsync(green, "STOP SLAVE", cancellationToken);
        }

        string position;
        var results = new List<TableVerification>();
        try
        {
            await Sql.ExecuteAsync(blue, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", cancellationToken);
            await Sql.ExecuteAsync(blue, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", cancellationToken);
            var status = (await Sql.RowsAsync(blue, "SHOW STATUS LIKE 'binlog_snapshot_%'", cancellationToken)).ToDictionary(r => r["Variable_name"]!, r => r["Value"], StringComparer.OrdinalIgnoreCase);
            position = await Sql.StringAsync(blue, "SELECT BINLOG_GTID_POS(@f, @p)", cancellationToken, ("@f", status.GetValueOrDefault("Binlog_snapshot_file")), ("@p", long.Parse(status.GetValueOrDefault("Binlog_snapshot_position") ?? "0", CultureInfo.InvariantCulture))) ?? string.Empty;
            if (replicating && position.Length > 0)
            {
                await Sql.ExecuteAsync(green, $"START SLAVE UNTIL master_gtid_pos = {Sql.Literal(position)}", cancellationToken);
                while (await Sql.LongAsync(green, "SELECT MASTER_GTID_WAIT(@p, 1)", cancellationToken, ("@p", position)) != 0)
                {
                    if (await ReplicaStatus.ReadAsync(green, cancellationToken) is { Error: { } error })
                    {
                        throw new Core.Errors.TealException("verify.replication-broken", $"green cannot reach blue's position {position}: {error}", "fix green's replication (SHOW SLAVE STATUS on green)");
                    }
                }

                await Sql.ExecuteAsync(green, "STOP SLAVE", cancellationToken);
            }

            await Sql.ExecuteAsync(green, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ", cancellationToken);
            await Sql.ExecuteAsync(green, "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY", cancellationToken);
            var schemas = await TealObjects.UserSchemasAsync(blue, sessions.Schema, cancellationToken);
            var blueTables = await TealObjects.TablesAsync(blue, schemas, cancellationToken);
            var greenTables = (await TealObjects.TablesAsync(green, schemas, cancellationToken)).Select(t => t.FullName).ToHashSet(StringComparer.Ordinal);
            foreach (var table in blueTables.Where(t => t.Schema != sessions.Schema))
            {
                var result = greenTables.Contains(table.FullName)
                    ? await CompareAsync(blue, green, table, cancellationToken)
                    : new TableVerification(table.FullName, 0, 0, string.Empty, string.Empty, 0) { Problem = "missing on green" };
                results.Add(result);
                progress?.Report(result);
            }

            await Sql.ExecuteAsync(blue, "COMMIT", cancellationToken);
            await Sql.ExecuteAsync(green, "COMMIT", cancellationToken);
        }
        finally
        {
            if (replicating)
            {
                await Sql.ExecuteAsync(green, "START SLAVE", CancellationToken.None);
            }
        }

        var settings = new List<SettingComparison>();
        if (sessions.Spec.ExpectedGreenVersion is { } expected)
        {
            var version = Engines.ServerFlavor.Number(await Sql.StringAsync(green, "SELECT VERSION()", cancellationToken) ?? string.Empty);
            settings.Add(new SettingComparison("version", expected, version == expected || version.StartsWith(expected + ".", StringComparison.Ordinal) ? expected : version));
        }

        foreach (var (name, value) in sessions.Spec.ExpectedGreenParameters)
        {
            var actual = await Sql.VariableAsync(green, name.Replace('-', '_'), cancellationToken) ?? "(not set)";
            settings.Add(new SettingComparison(name, value, actual));
        }

        return new VerifyReport(position, results) { Settings = settings, Seconds = started.Elapsed.TotalSeconds };
    }

    private static async Task<TableVerification> CompareAsync(MySqlConnection blue, MySqlConnection green, TableInfo table, CancellationToken cancellationToken)
    {
        var started = Stopwatch.StartNew();
        var columns = await TealObjects.ColumnsAsync(blue, table.Schema, table.Name, cancellationToken);
        var greenColumns = await TealObjects.ColumnsAsync(green, table.Schema, table.Name, cancellationToken);
        if (!columns.Select(c => c.Name).SequenceEqual(greenColumns.Select(c => c.Name), StringComparer.Ordinal))
        {
            return new TableVerification(table.FullName, 0, 0, string.Empty, string.Empty, 0) { Problem = "columns differ between blue and green" };
        }

        // Each row's text: every column as bytes, with a NULL flag (CONCAT_WS skips NULLs).
        var row = "CRC32(CONCAT_WS('#', " + string.Join(", ", columns.Select(c => $"ISNULL({Sql.Id(c.Name)}), CAST({Sql.Id(c.Name)} AS BINARY)")) + "))";
        var aggregate = $"SELECT COUNT(*), COALESCE(BIT_XOR({row}), 0), COALESCE(SUM({row}), 0) FROM {table.Quoted}";
        var chunks = await ChunksAsync(blue, table, columns, cancellationToken);
        long blueRows = 0, greenRows = 0;
        ulong blueXor = 0, greenXor = 0;
        decimal blueSum = 0, greenSum = 0;
        var different = 0;
        foreach (var where in chunks)
        {
            var sql = aggregate + where;
            var b = ReadAggregateAsync(blue, sql, cancellationToken);
            var g = ReadAggregateAsync(green, sql, cancellationToken);
            var (bc, bx, bs) = await b;
            var (gc, gx, gs) = await g;
            blueRows += bc;
            greenRows += gc;
            blueXor ^= bx;
            greenXor ^= gx;
            blueSum += bs;
            greenSum += gs;
            if (bc != gc || bx != gx || bs != gs)
            {
                different++;
            }
        }

        return new TableVerification(table.FullName, blueRows, greenRows, Checksum(blueXor, blueSum), Checksum(greenXor, greenSum), started.Elapsed.TotalSeconds)
        {
            Chunks = chunks.Count,
            DifferentChunks = different,
        };
    }

    /// <summary>WHERE clauses splitting the table by its integer primary key (first column), or one chunk.</summary>
    private static async Task<List<string>> ChunksAsync(MySqlConnection blue, TableInfo table, List<ColumnInfo> columns, CancellationToken cancellationToken)
    {
        var key = await TealObjects.PrimaryKeyAsync(blue, table.Schema, table.Name, cancellationToken);
        var integer = key.Count > 0 && columns.FirstOrDefault(c => c.Name == key[0])?.DataType is "tinyint" or "smallint" or "mediumint" or "int" or "bigint";
        if (!integer || table.EstimatedRows <= ChunkRows)
        {
            return [string.Empty];
        }

        var bounds = await Sql.RowAsync(blue, $"SELECT MIN({Sql.Id(key[0])}) AS lo, MAX({Sql.Id(key[0])}) AS hi FROM {table.Quoted}", cancellationToken);
        if (bounds?["lo"] is null || bounds["hi"] is null)
        {
            return [string.Empty];
        }

        var lo = decimal.Parse(bounds["lo"]!, CultureInfo.InvariantCulture);
        var hi = decimal.Parse(bounds["hi"]!, CultureInfo.InvariantCulture);
        var count = (int)Math.Min(1000, Math.Max(1, table.EstimatedRows / ChunkRows));
        var width = Math.Ceiling((hi - lo + 1) / count);
        var id = Sql.Id(key[0]);
        var chunks = new List<string>();
        for (var start = lo; start <= hi; start += width)
        {
            var end = start + width;
            // The first and last chunks are open-ended, so no row is outside every chunk.
            var lower = start == lo ? string.Empty : $"{id} >= {start.ToString(CultureInfo.InvariantCulture)}";
            var upper = end > hi ? string.Empty : $"{id} < {end.ToString(CultureInfo.InvariantCulture)}";
            var conditions = new[] { lower, upper }.Where(c => c.Length > 0).ToList();
            chunks.Add(conditions.Count == 0 ? string.Empty : " WHERE " + string.Join(" AND ", conditions));
        }

        return chunks;
    }

    private static async Task<(long Count, ulong Xor, decimal Sum)> ReadAggregateAsync(MySqlConnection connection, string sql, CancellationToken cancellationToken)
    {
        await using var command = new MySqlCommand(sql, connection);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        return (reader.GetInt64(0), Convert.ToUInt64(reader.GetValue(1), CultureInfo.InvariantCulture), Convert.ToDecimal(reader.GetValue(2), CultureInfo.InvariantCulture));
    }

    private static string Checksum(ulong xor, decimal sum) => $"{xor:x8}-{sum.ToString(CultureInfo.InvariantCulture)}";
}
