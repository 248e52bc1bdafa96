using System.Data.Common;
using Npgsql;

namespace Teal.Testing.Load;

/// <summary><see cref="ProbeWriterBase"/> for PostgreSQL endpoints (Teal's proxy or a PgBouncer).</summary>
public sealed class ProbeWriter : ProbeWriterBase
{
    private readonly string _connectionString;

    /// <summary>Writes rows numbered from <paramref name="firstNumber"/> (several probes on one table take ranges apart).</summary>
    public ProbeWriter(string connectionString, long firstNumber = 1)
    {
        FirstNumber = firstNumber;
        _connectionString = new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false, Timeout = 30, CommandTimeout = 30 }.ConnectionString;
    }

    /// <summary>The CREATE TABLE a test runs on blue before the deployment is created.</summary>
    public static string CreateTableSql => $"CREATE TABLE {Table} (n bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())";

    protected override DbConnection NewConnection() => new NpgsqlConnection(_connectionString);

    protected override DbCommand Insert(DbConnection connection, long n) =>
        new NpgsqlCommand($"INSERT INTO {Table} (n) VALUES ($1)", (NpgsqlConnection)connection) { Parameters = { new() { Value = n } } };

    protected override bool IsConnectionFailure(Exception ex) => ex is NpgsqlException or IOException or TimeoutException or InvalidOperationException;
}
