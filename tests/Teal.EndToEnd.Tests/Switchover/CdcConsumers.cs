using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Npgsql;
using Npgsql.Replication;
using Npgsql.Replication.PgOutput;
using Npgsql.Replication.PgOutput.Messages;
using NpgsqlTypes;
using Teal.Testing.Load;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// Two real change-data-capture consumers of one slot, each reading the probe table's inserts
/// up to a position (a cutover's final position), as a consumer following a switchover does:
/// <c>pg_recvlogical</c> with <c>test_decoding</c>, and a <c>pgoutput</c> client through
/// Npgsql's logical replication API. Both confirm what they read.
/// </summary>
internal static partial class CdcConsumers
{
    public static string RecvLogical => File.Exists("/usr/lib/postgresql/15/bin/pg_recvlogical") ? "/usr/lib/postgresql/15/bin/pg_recvlogical" : "pg_recvlogical";

    /// <summary>
    /// pg_recvlogical from the slot's confirmed position to <paramref name="endPosition"/>
    /// (it stops once the server is past it): the probe rows inserted, in commit order.
    /// </summary>
    public static async Task<List<long>> ReadTestDecodingAsync(string connectionString, string slot, string endPosition)
    {
        var (info, password) = Conninfo(connectionString);
        var start = new ProcessStartInfo(RecvLogical) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { "-d", info, "--slot", slot, "--start", "--endpos", endPosition, "--no-loop", "-f", "-", "-s", "1", "-F", "1", "-o", "include-xids=0" })
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment["PGPASSWORD"] = password;
        using var process = Process.Start(start) ?? throw new InvalidOperationException("could not start pg_recvlogical");
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill();
            throw new TimeoutException($"pg_recvlogical did not reach {endPosition} on slot {slot}: {await errors}");
        }

        process.ExitCode.ShouldBe(0, await errors);
        return Inserts(await output);
    }

    /// <summary>pg_recvlogical following a slot until stopped, confirming each second (a live consumer).</summary>
    public static Process FollowTestDecoding(string connectionString, string slot, string outputFile)
    {
        var (info, password) = Conninfo(connectionString);
        var start = new ProcessStartInfo(RecvLogical) { RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { "-d", info, "--slot", slot, "--start", "-f", outputFile, "-s", "1", "-F", "1", "-o", "include-xids=0" })
        {
            start.ArgumentList.Add(arg);
        }

        start.Environment["PGPASSWORD"] = password;
        return Process.Start(start) ?? throw new InvalidOperationException("could not start pg_recvlogical");
    }

    /// <summary>Probe rows in test_decoding output (<c>table public.teal_probe: INSERT: n[bigint]:42 …</c>).</summary>
    public static List<long> Inserts(string testDecodingOutput) =>
        [.. InsertLine().Matches(testDecodingOutput).Select(m => long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture))];

    /// <summary>
    /// A pgoutput consumer: the probe rows of every transaction that committed before
    /// <paramref name="endPosition"/>, confirming each commit; it stops at the first transaction
    /// past it, or once nothing arrived for a few seconds (nothing more was committed).
    /// </summary>
    public static async Task<List<long>> ReadPgOutputAsync(string connectionString, string slot, string publication, string? endPosition)
    {
        var end = endPosition is null ? (NpgsqlLogSequenceNumber?)null : NpgsqlLogSequenceNumber.Parse(endPosition);
        await using var connection = new LogicalReplicationConnection(new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false }.ConnectionString);
        await connection.Open();
        var rows = new List<long>();
        var pending = new List<long>();
        var idle = TimeSpan.FromSeconds(5);
        using var quiet = new CancellationTokenSource(idle);
        try
        {
            await foreach (var message in connection.StartReplication(new PgOutputReplicationSlot(slot), new PgOutputReplicationOptions(publication, PgOutputProtocolVersion.V1), quiet.Token))
            {
                quiet.CancelAfter(idle);
                switch (message)
                {
                    case BeginMessage begin when end is { } e && begin.TransactionFinalLsn >= e:
                        return rows;
                    case InsertMessage insert when insert.Relation.RelationName == ProbeWriter.Table:
                        var first = true;
                        await foreach (var value in insert.NewRow)
                        {
                            if (first)
                            {
                                pending.Add(long.Parse(await value.Get<string>(), CultureInfo.InvariantCulture));
                                first = false;
                            }
                        }

                        break;
                    case CommitMessage commit:
                        rows.AddRange(pending);
                        pending.Clear();
                        connection.SetReplicationStatus(commit.TransactionEndLsn);
                        await connection.SendStatusUpdate(CancellationToken.None);
                        break;
                }
            }
        }
        catch (OperationCanceledException) when (quiet.IsCancellationRequested)
        {
            // Nothing for a while: everything committed so far was read.
        }

        return rows;
    }

    private static (string Conninfo, string Password) Conninfo(string connectionString)
    {
        var b = new NpgsqlConnectionStringBuilder(connectionString);
        return ($"host={b.Host} port={b.Port} user={b.Username} dbname={b.Database}", b.Password ?? string.Empty);
    }

    [GeneratedRegex(@"table public\.teal_probe: INSERT: n\[bigint\]:(\d+)")]
    private static partial Regex InsertLine();
}
