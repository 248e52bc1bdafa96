using System.Data.Common;
using MySqlConnector;

namespace Teal.Testing.Load;

/// <summary><see cref="ProbeWriterBase"/> for MySQL-protocol endpoints (Teal's proxy in front of MariaDB).</summary>
public sealed class MySqlProbeWriter(string connectionString) : ProbeWriterBase
{
    private readonly string _connectionString = new MySqlConnectionStringBuilder(connectionString) { Pooling = false, ConnectionTimeout = 30, DefaultCommandTimeout = 30 }.ConnectionString;

    /// <summary>The CREATE TABLE a test runs on blue (in its database) before the deployment is created.</summary>
    public static string CreateTableSql => $"CREATE TABLE {Table} (n BIGINT PRIMARY KEY, at DATETIME(6) NOT NULL DEFAULT NOW(6)) ENGINE=InnoDB";

    protected override DbConnection NewConnection() => new MySqlConnection(_connectionString);

    protected override DbCommand Insert(DbConnection connection, long n) =>
        new MySqlCommand($"INSERT INTO {Table} (n) VALUES (@n)", (MySqlConnection)connection) { Parameters = { new("@n", n) } };

    protected override bool IsConnectionFailure(Exception ex) => ex is MySqlException or IOException or System.Net.Sockets.SocketException or TimeoutException or InvalidOperationException;
}
