using System.Text.Json;
using MySqlConnector;
using Teal.MySql.Connections;
using Teal.Postgres.Instances;
using Teal.Testing;
using Teal.Testing.Load;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests;

/// <summary>
/// <see cref="Scenario"/> for MariaDB, as <see cref="BlueGreenScenario"/> is for PostgreSQL:
/// <c>teal serve</c>, a MariaDB 10.11 blue registered with an endpoint of Teal's proxy (which
/// speaks the MySQL protocol for it), an application account and schema (a probe table, a table
/// keyed by AUTO_INCREMENT) and a deployment with a managed MariaDB 10.11 green. Everything goes
/// through the real <c>teal</c> CLI.
/// </summary>
public sealed class MariaDbScenario : Scenario
{
    private MariaDbScenario(TealProcess teal, MariaDbServer blue, int endpointPort)
        : base(teal, blue, endpointPort)
    {
        Blue = blue;
    }

    public MariaDbServer Blue { get; }

    /// <summary>
    /// Clients connect here (Teal's proxy), never to blue or green directly; on TLS, which the
    /// proxy ends with the certificate teal serve generated (the servers here have none).
    /// </summary>
    public string EndpointConnectionString => AppConnectionString("127.0.0.1", EndpointPort, MySqlSslMode.Required);

    /// <summary>The application's account on blue itself, bypassing the endpoint.</summary>
    public string BlueConnectionString => AppConnectionString(Blue.Host, Blue.Port);

    public static string AppConnectionString(string host, int port, MySqlSslMode ssl = MySqlSslMode.Preferred) => new MySqlConnectionStringBuilder
    {
        SslMode = ssl,
        Server = host,
        Port = (uint)port,
        UserID = AppUser,
        Password = AppPassword,
        Database = Database,
        Pooling = false,
        ConnectionTimeout = 30,
    }.ConnectionString;

    protected override string GreenVersion => "10.11";

    public static async Task<MariaDbScenario> StartAsync(string? tealEntry = null, IReadOnlyDictionary<string, string>? tealEnvironment = null)
    {
        var teal = await TealProcess.StartAsync(tealEntry, tealEnvironment);
        var blue = await MariaDbServer.StartAsync();
        var scenario = new MariaDbScenario(teal, blue, ManagedPostgres.FreePort());
        await blue.ExecuteAsync(
            $"""
            CREATE DATABASE {Database};
            CREATE TABLE {Database}.{MySqlProbeWriter.Table} (n BIGINT PRIMARY KEY, at DATETIME(6) NOT NULL DEFAULT NOW(6)) ENGINE=InnoDB;
            CREATE TABLE {Database}.orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(100) NOT NULL) ENGINE=InnoDB;
            INSERT INTO {Database}.orders (note) SELECT CONCAT('before ', seq) FROM {Database}.seq_1_to_500;
            CREATE USER {AppUser}@'%' IDENTIFIED BY '{AppPassword}';
            GRANT SELECT, INSERT, UPDATE, DELETE ON {Database}.* TO {AppUser}@'%';
            """);

        (await scenario.Cli.RunAsync("instance", "add", "app", "--connection", blue.Uri(Database), "--endpoint", $"127.0.0.1:{scenario.EndpointPort}"))
            .ShouldSucceed();
        return scenario;
    }

    /// <summary>The application's account on <paramref name="instance"/> (its address from <c>teal instance url</c>).</summary>
    public async Task<string> AppUrlAsync(string instance)
    {
        var info = await InstanceAsync(instance, asTeal: false, MySqlConnectionStrings.Parse);
        return AppConnectionString(info.Host, info.Port);
    }

    /// <summary>The instance's own URL from Teal (its admin login, or Teal's, the one a fenced side accepts).</summary>
    public async Task<string> InstanceUrlAsync(string instance, bool asTeal = false)
    {
        var info = await InstanceAsync(instance, asTeal, MySqlConnectionStrings.Parse);
        return new MySqlConnectionStringBuilder { Server = info.Host, Port = (uint)info.Port, UserID = info.User, Password = info.Password, Database = Database, Pooling = false }.ConnectionString;
    }

    public static Task<T> ScalarAsync<T>(string connectionString, string sql) => ScalarAsync<T>(new MySqlConnection(connectionString), sql);

    /// <summary>How many of <paramref name="numbers"/> (acknowledged probe rows) are on the server behind <paramref name="connectionString"/>.</summary>
    public static async Task<long> CountProbeRowsAsync(string connectionString, IReadOnlyList<long> numbers)
    {
        var present = new HashSet<long>();
        await using var connection = new MySqlConnection(connectionString);
        await connection.OpenAsync();
        await using var select = new MySqlCommand($"SELECT n FROM {MySqlProbeWriter.Table}", connection);
        await using var reader = await select.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            present.Add(reader.GetInt64(0));
        }

        return numbers.Count(present.Contains);
    }

    /// <summary>
    /// Whether the application's account can write (rolled back) on the server behind
    /// <paramref name="connectionString"/>: a fenced side refuses the login or the write.
    /// </summary>
    public static Task<bool> AcceptsWritesAsync(string connectionString) =>
        AcceptsWritesAsync(
            new MySqlConnection(connectionString),
            refusesLogin: ex => ex is MySqlException,
            // ER_OPTION_PREVENTS_STATEMENT: read_only.
            refusesWrite: ex => ex is MySqlException { Number: 1290 });
}
