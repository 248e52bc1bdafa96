using System.Text.Json;
using MySqlConnector;
using Teal.Postgres.Instances;
using Teal.Testing;
using Teal.Testing.Load;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests;

/// <summary>
/// <see cref="BlueGreenScenario"/> for MariaDB: <c>teal serve</c>, a MariaDB 10.11 blue
/// registered with an endpoint of Teal's proxy (which speaks the MySQL protocol for it), an
/// application account and schema (a probe table, a table keyed by AUTO_INCREMENT) and a
/// deployment with a managed MariaDB 10.11 green. Everything goes through the real <c>teal</c> CLI.
/// </summary>
public sealed class MariaDbScenario : IAsyncDisposable
{
    public const string Database = "app";

    /// <summary>The application's account: Teal copies it (with its password hash) to green, so clients log in on either side.</summary>
    public const string AppUser = "app_user";

    public const string AppPassword = "app-secret-for-tests";

    private MariaDbScenario(TealProcess teal, MariaDbServer blue, int endpointPort)
    {
        Teal = teal;
        Cli = new TealCli(teal);
        Blue = blue;
        EndpointPort = endpointPort;
    }

    public TealProcess Teal { get; }

    public TealCli Cli { get; }

    public MariaDbServer Blue { get; }

    public int EndpointPort { get; }

    /// <summary>Clients connect here (Teal's proxy), never to blue or green directly.</summary>
    public string EndpointConnectionString => AppConnectionString("127.0.0.1", EndpointPort);

    /// <summary>The application's account on blue itself, bypassing the endpoint.</summary>
    public string BlueConnectionString => AppConnectionString(Blue.Host, Blue.Port);

    public static string AppConnectionString(string host, int port) => new MySqlConnectionStringBuilder
    {
        Server = host,
        Port = (uint)port,
        UserID = AppUser,
        Password = AppPassword,
        Database = Database,
        Pooling = false,
        ConnectionTimeout = 30,
    }.ConnectionString;

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

    /// <summary><c>teal create upgrade --source app --target-engine-version 10.11 --wait</c>.</summary>
    public async Task<JsonElement> CreateDeploymentAsync(string name = "upgrade")
    {
        var created = await Cli.RunAsync(["create", name, "--source", "app", "--target-engine-version", "10.11", "--wait"], TimeSpan.FromMinutes(5));
        created.ShouldSucceed();
        var deployment = await ShowAsync(name);
        BlueGreenScenario.Status(deployment).ShouldBe("AVAILABLE", deployment.ToString());
        return deployment;
    }

    public async Task<JsonElement> ShowAsync(string name = "upgrade")
    {
        var shown = await Cli.RunAsync("show", name, "--output", "json");
        shown.ShouldSucceed();
        return JsonDocument.Parse(shown.Stdout).RootElement.Clone();
    }

    /// <summary>The application's account on <paramref name="instance"/> (its address from <c>teal instance url</c>).</summary>
    public async Task<string> AppUrlAsync(string instance)
    {
        var info = await InstanceAsync(instance, asTeal: false);
        return AppConnectionString(info.Host, info.Port);
    }

    /// <summary>The instance's own URL from Teal (its admin login, or Teal's, the one a fenced side accepts).</summary>
    public async Task<string> InstanceUrlAsync(string instance, bool asTeal = false)
    {
        var info = await InstanceAsync(instance, asTeal);
        return new MySqlConnectionStringBuilder { Server = info.Host, Port = (uint)info.Port, UserID = info.User, Password = info.Password, Database = Database, Pooling = false }.ConnectionString;
    }

    private async Task<Teal.Core.Engines.ConnectionInfo> InstanceAsync(string instance, bool asTeal)
    {
        var url = asTeal ? await Cli.RunAsync("instance", "url", instance, "--as-teal") : await Cli.RunAsync("instance", "url", instance);
        url.ShouldSucceed();
        return global::Teal.MySql.Connections.MySqlConnectionStrings.Parse(url.Stdout.Trim());
    }

    public async Task<JsonElement> WaitForStatusAsync(string name, TimeSpan timeout, params string[] statuses)
    {
        var deadline = DateTime.UtcNow + timeout;
        JsonElement deployment;
        do
        {
            deployment = await ShowAsync(name);
            if (statuses.Contains(BlueGreenScenario.Status(deployment)))
            {
                return deployment;
            }

            await Task.Delay(250);
        }
        while (DateTime.UtcNow < deadline);
        throw new TimeoutException($"deployment {name} did not reach {string.Join("/", statuses)} within {timeout}: {deployment}\n{Teal.Log}");
    }

    public static async Task<T> ScalarAsync<T>(string connectionString, string sql)
    {
        await using var connection = new MySqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new MySqlCommand(sql, connection);
        return (T)Convert.ChangeType((await command.ExecuteScalarAsync())!, typeof(T), System.Globalization.CultureInfo.InvariantCulture);
    }

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
    public static async Task<bool> AcceptsWritesAsync(string connectionString)
    {
        await using var connection = new MySqlConnection(connectionString);
        try
        {
            await connection.OpenAsync();
        }
        catch (MySqlException)
        {
            return false;
        }

        await using var transaction = await connection.BeginTransactionAsync();
        try
        {
            await using var insert = new MySqlCommand("INSERT INTO orders (note) VALUES ('write check')", connection, transaction);
            await insert.ExecuteNonQueryAsync();
            await transaction.RollbackAsync();
            return true;
        }
        catch (MySqlException ex) when (ex.Number == 1290)
        {
            // ER_OPTION_PREVENTS_STATEMENT: read_only.
            return false;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Teal.DisposeAsync();
        await Blue.DisposeAsync();
    }
}
