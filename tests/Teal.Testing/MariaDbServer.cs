using MySqlConnector;
using Teal.Core.Engines;
using Teal.MySql.Instances;

namespace Teal.Testing;

/// <summary>
/// A real MariaDB server for a test: installed and started from local binaries on a free port in
/// its own directory (binlog, ROW format, GTID strict mode, a unique server_id), with Teal's
/// account <c>teal</c> holding a generated password; removed on dispose.
/// </summary>
public sealed class MariaDbServer : IAsyncDisposable
{
    /// <summary>
    /// Settings for test servers: durability traded for speed (nothing here survives a machine
    /// crash anyway); everything replication-related stays as in production.
    /// </summary>
    public static IReadOnlyDictionary<string, string> TestParameters { get; } = new Dictionary<string, string>
    {
        ["innodb-flush-log-at-trx-commit"] = "2",
        ["sync-binlog"] = "0",
        ["innodb-buffer-pool-size"] = "64M",
        ["performance-schema"] = "OFF",
        ["innodb-doublewrite"] = "0",
    };

    private MariaDbServer(ManagedMariaDbServer server, string password)
    {
        Server = server;
        Password = password;
    }

    public ManagedMariaDbServer Server { get; }

    /// <summary>The password of Teal's account and of root@localhost (generated per server).</summary>
    public string Password { get; }

    public int Port => Server.Port;

    public string Host => Server.ListenAddress;

    public string Version => Server.Version;

    public string User => Server.User;

    public long ServerId => Server.ServerId;

    public static async Task<MariaDbServer> StartAsync(string version = "10.11", IReadOnlyDictionary<string, string>? parameters = null, CancellationToken cancellationToken = default)
    {
        var settings = new Dictionary<string, string>(TestParameters);
        foreach (var (k, v) in parameters ?? new Dictionary<string, string>())
        {
            settings[k] = v;
        }

        var password = ManagedMariaDb.GeneratePassword();
        var spec = new ManagedMariaDbSpec(TestDirectories.NewDirectory("mdb"), version, password) { Parameters = settings };
        var server = await TestDirectories.ManagedMariaDb.CreateAsync(spec, cancellationToken);
        TestDirectories.Track(server);
        return new MariaDbServer(server, password);
    }

    public string ConnectionString(string database = "", string? user = null, string? password = null) =>
        new MySqlConnectionStringBuilder
        {
            Server = Host,
            Port = (uint)Port,
            UserID = user ?? User,
            Password = password ?? Password,
            Database = database,
            // Tests kill sessions and lock accounts; a pooled connection would hide that.
            Pooling = false,
            ConnectionTimeout = 15,
            DefaultCommandTimeout = 120,
            AllowUserVariables = true,
        }.ConnectionString;

    /// <summary>Teal's view of this server (for links and engines).</summary>
    public ConnectionInfo Connection(string database = "mysql") => new(Host, Port, User, Password, database);

    /// <summary>A <c>mysql://</c> URI (for Teal's CLI and API).</summary>
    public string Uri(string database = "mysql", string? user = null, string? password = null) =>
        Teal.MySql.Connections.MySqlConnectionStrings.Uri(Host, Port, user ?? User, password ?? Password, database);

    public async Task<MySqlConnection> OpenAsync(string database = "", string? user = null, string? password = null, CancellationToken cancellationToken = default)
    {
        var connection = new MySqlConnection(ConnectionString(database, user, password));
        await connection.OpenAsync(cancellationToken);
        return connection;
    }

    public async Task ExecuteAsync(string sql, CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken: cancellationToken);
        await using var command = new MySqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    public async Task<T> ScalarAsync<T>(string sql, CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(cancellationToken: cancellationToken);
        await using var command = new MySqlCommand(sql, connection);
        var value = await command.ExecuteScalarAsync(cancellationToken);
        return (T)Convert.ChangeType(value!, typeof(T), System.Globalization.CultureInfo.InvariantCulture);
    }

    public async ValueTask DisposeAsync()
    {
        await ManagedMariaDb.RemoveAsync(Server, CancellationToken.None);
        TestDirectories.Untrack(Server);
    }
}
