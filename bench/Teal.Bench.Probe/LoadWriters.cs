using System.Data.Common;

namespace Teal.Bench.Probe;

/// <summary>What the background load did: committed transactions and failed attempts (each one an error an application would have seen).</summary>
public sealed record LoadSummary(int Clients, long Committed, long Errors, IReadOnlyList<string> ErrorSamples);

/// <summary>
/// The application load next to the probe for the MySQL-family switchover bench (the PostgreSQL
/// runs use pgbench): <paramref name="clients"/> connections, each running small transactions
/// back to back — <c>START TRANSACTION</c>, an UPDATE of one of <see cref="Accounts"/> rows, an
/// INSERT into a history table, <c>COMMIT</c>, each its own round trip — so a transaction is open
/// between statements and a drain at transaction boundaries has something to wait for. After an
/// error a client reconnects (as a pooled application does) and carries on.
/// </summary>
public sealed class LoadWriters(Func<DbConnection> connect, int clients)
{
    /// <summary>Rows in <c>load_accounts</c>: many more than clients, so the load measures the switchover, not row-lock queues.</summary>
    public const int Accounts = 1000;

    /// <summary>The tables the load writes; the bench creates them on blue (in the probe's database) before the copy.</summary>
    public static readonly string[] CreateTablesSql =
    [
        "CREATE TABLE load_accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL DEFAULT 0) ENGINE=InnoDB",
        "CREATE TABLE load_history (id BIGINT AUTO_INCREMENT PRIMARY KEY, account INT NOT NULL, delta INT NOT NULL, at DATETIME(6) NOT NULL DEFAULT NOW(6)) ENGINE=InnoDB",
        $"INSERT INTO load_accounts (id) SELECT seq FROM seq_1_to_{Accounts}",
    ];

    private static readonly TimeSpan ReconnectPause = TimeSpan.FromMilliseconds(5);

    private readonly List<string> _errors = [];
    private long _committed;

    public async Task<LoadSummary> RunAsync(CancellationToken stop)
    {
        await Task.WhenAll(Enumerable.Range(0, clients).Select(i => Task.Run(() => ClientAsync(i, stop), CancellationToken.None)));
        lock (_errors)
        {
            return new LoadSummary(clients, Interlocked.Read(ref _committed), _errors.Count, [.. _errors.Distinct().Take(5)]);
        }
    }

    private async Task ClientAsync(int client, CancellationToken stop)
    {
        var random = new Random(client);
        DbConnection? connection = null;
        while (!stop.IsCancellationRequested)
        {
            try
            {
                if (connection is null)
                {
                    connection = connect();
                    await connection.OpenAsync(CancellationToken.None);
                }

                var account = random.Next(1, Accounts + 1);
                // Not cancellable by stop: a transaction in flight finishes, as an application's would.
                await ExecuteAsync(connection, "START TRANSACTION", account);
                await ExecuteAsync(connection, "UPDATE load_accounts SET balance = balance + 1 WHERE id = @a", account);
                await ExecuteAsync(connection, "INSERT INTO load_history (account, delta) VALUES (@a, 1)", account);
                await ExecuteAsync(connection, "COMMIT", account);
                Interlocked.Increment(ref _committed);
            }
            // Any failure of the client (MySqlConnector lets a broken pipe out as a bare SocketException)
            // is an error the application saw: counted, then a new connection.
            catch (Exception ex) when (ex is DbException or InvalidOperationException or TimeoutException or IOException or System.Net.Sockets.SocketException)
            {
                lock (_errors)
                {
                    _errors.Add(ex.Message);
                }

                if (connection is not null)
                {
                    await connection.DisposeAsync();
                    connection = null;
                }

                await Task.Delay(ReconnectPause, CancellationToken.None);
            }
        }

        if (connection is not null)
        {
            await connection.DisposeAsync();
        }
    }

    private static async Task ExecuteAsync(DbConnection connection, string sql, int account)
    {
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        if (sql.Contains("@a", StringComparison.Ordinal))
        {
            var parameter = command.CreateParameter();
            parameter.ParameterName = "@a";
            parameter.Value = account;
            command.Parameters.Add(parameter);
        }

        await command.ExecuteNonQueryAsync(CancellationToken.None);
    }
}
