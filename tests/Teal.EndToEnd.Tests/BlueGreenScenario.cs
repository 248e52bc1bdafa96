using System.Text.Json;
using Npgsql;
using Teal.Postgres.Instances;
using Teal.Testing;
using Teal.Testing.Load;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests;

/// <summary>
/// A real setup as an operator builds it: <c>teal serve</c>, a PostgreSQL 15 blue registered
/// with an endpoint of Teal's proxy in front of it, an application schema (pgbench's tables, a
/// probe table, a table keyed by a sequence) and a deployment with a managed PostgreSQL 17 green.
/// Everything goes through the real <c>teal</c> CLI.
/// </summary>
public sealed class BlueGreenScenario : IAsyncDisposable
{
    public const string Database = "app";

    /// <summary>The application's role: Teal copies it (with its password hash) to green, so clients log in on either side.</summary>
    public const string AppUser = "app_user";

    public const string AppPassword = "app-secret-for-tests";

    private BlueGreenScenario(TealProcess teal, PostgresServer blue, int endpointPort)
    {
        Teal = teal;
        Cli = new TealCli(teal);
        Blue = blue;
        EndpointPort = endpointPort;
    }

    public TealProcess Teal { get; }

    public TealCli Cli { get; }

    public PostgresServer Blue { get; }

    public int EndpointPort { get; }

    /// <summary>Clients connect here (Teal's proxy), never to blue or green directly.</summary>
    public string EndpointConnectionString => new NpgsqlConnectionStringBuilder
    {
        Host = "127.0.0.1",
        Port = EndpointPort,
        Username = AppUser,
        Password = AppPassword,
        Database = Database,
    }.ConnectionString;

    /// <summary>Starts Teal and blue, registers blue with an endpoint and loads the schema.</summary>
    public static async Task<BlueGreenScenario> StartAsync(int pgbenchScale = 1, string? tealEntry = null, IReadOnlyDictionary<string, string>? tealEnvironment = null, TealStateStore? state = null)
    {
        var teal = await TealProcess.StartAsync(tealEntry, tealEnvironment, state: state);
        var blue = await PostgresServer.StartAsync("15");
        var scenario = new BlueGreenScenario(teal, blue, ManagedPostgres.FreePort());
        await blue.ExecuteAsync($"CREATE ROLE {AppUser} LOGIN PASSWORD '{AppPassword}'");
        await blue.ExecuteAsync($"CREATE DATABASE {Database}");
        await blue.ExecuteAsync(ProbeWriter.CreateTableSql, Database);
        await blue.ExecuteAsync(DirectWriter.CreateTableSql, Database);
        await blue.ExecuteAsync("CREATE TABLE orders (id bigserial PRIMARY KEY, note text NOT NULL)", Database);
        await blue.ExecuteAsync("INSERT INTO orders (note) SELECT 'before ' || g FROM generate_series(1, 500) g", Database);
        await PgBench.InitializeAsync(blue.Host, blue.Port, blue.User, blue.Password, Database, pgbenchScale);
        // pgbench_history has no key; it is insert-only, so the fix Teal's refusal names is enough.
        await blue.ExecuteAsync("ALTER TABLE pgbench_history REPLICA IDENTITY FULL", Database);
        await blue.ExecuteAsync($"GRANT ALL ON ALL TABLES IN SCHEMA public TO {AppUser}; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {AppUser}", Database);

        (await scenario.Cli.RunAsync("instance", "add", "app", "--connection", blue.Uri(Database), "--endpoint", $"127.0.0.1:{scenario.EndpointPort}"))
            .ShouldSucceed();
        return scenario;
    }

    /// <summary><c>teal create upgrade --source app --target-engine-version 17 --wait</c>.</summary>
    public async Task<JsonElement> CreateDeploymentAsync(string name = "upgrade")
    {
        var created = await Cli.RunAsync(["create", name, "--source", "app", "--target-engine-version", "17", "--wait"], TimeSpan.FromMinutes(5));
        created.ShouldSucceed();
        var deployment = await ShowAsync(name);
        Status(deployment).ShouldBe("AVAILABLE", deployment.ToString());
        return deployment;
    }

    public async Task<JsonElement> ShowAsync(string name = "upgrade")
    {
        var shown = await Cli.RunAsync("show", name, "--output", "json");
        shown.ShouldSucceed();
        return JsonDocument.Parse(shown.Stdout).RootElement.Clone();
    }

    /// <summary>
    /// The connection Teal hands out for an instance (with its password; explicit request), to
    /// the app database; with <paramref name="asTeal"/>, as Teal's own login, the one a fenced
    /// instance accepts.
    /// </summary>
    public async Task<string> InstanceUrlAsync(string instance, bool asTeal = false)
    {
        var url = asTeal ? await Cli.RunAsync("instance", "url", instance, "--as-teal") : await Cli.RunAsync("instance", "url", instance);
        url.ShouldSucceed();
        // Teal prints a libpq URI (for psql and pgbench); Npgsql wants key=value.
        var info = global::Teal.Postgres.Connections.ConnectionStrings.Parse(url.Stdout.Trim());
        return new NpgsqlConnectionStringBuilder { Host = info.Host, Port = info.Port, Username = info.User, Password = info.Password, Database = Database }.ConnectionString;
    }

    /// <summary>Status as the API spells it (<c>SWITCHOVER_COMPLETED</c>).</summary>
    public static string Status(JsonElement deployment) => Normalize(deployment.GetProperty("status").GetString());

    public static string Normalize(string? value) =>
        System.Text.RegularExpressions.Regex.Replace(value ?? string.Empty, "(?<=[a-z])(?=[A-Z])", "_").Replace('-', '_').ToUpperInvariant();

    public static async Task<T> ScalarAsync<T>(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        return (T)(await command.ExecuteScalarAsync())!;
    }

    public static async Task ExecuteAsync(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>
    /// Whether a plain write (rolled back) is accepted by the server behind
    /// <paramref name="connectionString"/>; a fenced server does not even let the user log in.
    /// </summary>
    public static async Task<bool> AcceptsWritesAsync(string connectionString)
    {
        await using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false }.ConnectionString);
        try
        {
            await connection.OpenAsync();
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.InvalidAuthorizationSpecification)
        {
            return false;
        }

        await using var transaction = await connection.BeginTransactionAsync();
        try
        {
            await using var insert = new NpgsqlCommand("INSERT INTO orders (note) VALUES ('write check')", connection, transaction);
            await insert.ExecuteNonQueryAsync();
            await transaction.RollbackAsync();
            return true;
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.ReadOnlySqlTransaction)
        {
            return false;
        }
    }

    /// <summary>Stops a server Teal manages the way a crash or an operator would (fast shutdown of its postmaster).</summary>
    public static async Task StopServerAsync(string connectionString)
    {
        var directory = await ScalarAsync<string>(connectionString, "SHOW data_directory");
        var pid = int.Parse(File.ReadLines(Path.Combine(directory, "postmaster.pid")).First(), System.Globalization.CultureInfo.InvariantCulture);
        using var postmaster = System.Diagnostics.Process.GetProcessById(pid);
        // SIGINT: fast shutdown, as pg_ctl stop -m fast.
        System.Diagnostics.Process.Start("kill", ["-INT", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();
        await postmaster.WaitForExitAsync();
        NpgsqlConnection.ClearAllPools();
    }

    /// <summary>Polls <c>teal show</c> until the status is one of <paramref name="statuses"/>.</summary>
    public async Task<JsonElement> WaitForStatusAsync(string name, TimeSpan timeout, params string[] statuses)
    {
        var deadline = DateTime.UtcNow + timeout;
        JsonElement deployment;
        do
        {
            deployment = await ShowAsync(name);
            if (statuses.Contains(Status(deployment)))
            {
                return deployment;
            }

            await Task.Delay(250);
        }
        while (DateTime.UtcNow < deadline);
        throw new TimeoutException($"deployment {name} did not reach {string.Join("/", statuses)} within {timeout}: {deployment}\n{Teal.Log}");
    }

    /// <summary>Polls until the running switchover's phase is <paramref name="phase"/> (alone, or with the steps that run with it: <c>catch-up+sync-sequences</c>).</summary>
    public async Task WaitForPhaseAsync(string phase, string name = "upgrade")
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            var deployment = await ShowAsync(name);
            if (deployment.TryGetProperty("switchover", out var switchover) && switchover.ValueKind == JsonValueKind.Object
                && switchover.TryGetProperty("phase", out var current) && (current.GetString() ?? string.Empty).Split('+').Contains(phase))
            {
                return;
            }

            await Task.Delay(50);
        }

        throw new TimeoutException($"switchover of {name} never reached {phase}");
    }

    /// <summary>Polls until the monitor reports forward replication running again.</summary>
    public async Task WaitForReplicationAsync(string name, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            var deployment = await ShowAsync(name);
            if (Normalize(deployment.GetProperty("replication").GetProperty("state").GetString()) == "REPLICATING")
            {
                return;
            }

            await Task.Delay(250);
        }

        throw new TimeoutException($"replication of {name} did not resume within {timeout}");
    }

    public async ValueTask DisposeAsync()
    {
        await Teal.DisposeAsync();
        await Blue.DisposeAsync();
    }
}

public static class CliResultAssertions
{
    public static void ShouldSucceed(this CliResult result) => result.ExitCode.ShouldBe(0, result.ToString());
}
