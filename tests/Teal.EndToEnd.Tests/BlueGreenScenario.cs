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
public sealed class BlueGreenScenario : Scenario
{
    private BlueGreenScenario(TealProcess teal, PostgresServer blue, int endpointPort)
        : base(teal, blue, endpointPort)
    {
        Blue = blue;
    }

    public PostgresServer Blue { get; }

    /// <summary>Clients connect here (Teal's proxy), never to blue or green directly.</summary>
    public string EndpointConnectionString => new NpgsqlConnectionStringBuilder
    {
        Host = "127.0.0.1",
        Port = EndpointPort,
        Username = AppUser,
        Password = AppPassword,
        Database = Database,
    }.ConnectionString;

    protected override string GreenVersion => "17";

    /// <summary>Starts Teal and blue, registers blue with an endpoint and loads the schema.</summary>
    public static async Task<BlueGreenScenario> StartAsync(int pgbenchScale = 1, string? tealEntry = null, IReadOnlyDictionary<string, string>? tealEnvironment = null, IReadOnlyList<string>? serveArguments = null, TealStateStore? state = null)
    {
        var teal = await TealProcess.StartAsync(tealEntry, tealEnvironment, serveArguments: serveArguments, state: state);
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

    /// <summary>
    /// The connection Teal hands out for an instance (with its password; explicit request), to
    /// the app database; with <paramref name="asTeal"/>, as Teal's own login, the one a fenced
    /// instance accepts.
    /// </summary>
    public async Task<string> InstanceUrlAsync(string instance, bool asTeal = false)
    {
        // Teal prints a libpq URI (for psql and pgbench); Npgsql wants key=value.
        var info = await InstanceAsync(instance, asTeal, global::Teal.Postgres.Connections.ConnectionStrings.Parse);
        return new NpgsqlConnectionStringBuilder { Host = info.Host, Port = info.Port, Username = info.User, Password = info.Password, Database = Database }.ConnectionString;
    }

    public static Task<T> ScalarAsync<T>(string connectionString, string sql) => ScalarAsync<T>(new NpgsqlConnection(connectionString), sql);

    public static Task ExecuteAsync(string connectionString, string sql) => ExecuteAsync(new NpgsqlConnection(connectionString), sql);

    /// <summary>
    /// Whether a plain write (rolled back) is accepted by the server behind
    /// <paramref name="connectionString"/>; a fenced server does not even let the user log in.
    /// </summary>
    public static Task<bool> AcceptsWritesAsync(string connectionString) =>
        AcceptsWritesAsync(
            new NpgsqlConnection(new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false }.ConnectionString),
            refusesLogin: ex => ex is PostgresException { SqlState: PostgresErrorCodes.InvalidAuthorizationSpecification },
            refusesWrite: ex => ex is PostgresException { SqlState: PostgresErrorCodes.ReadOnlySqlTransaction });

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

    /// <summary>Polls until the running switchover's phase is <paramref name="phase"/> (alone, or with the steps that run with it: <c>catch-up+sync-sequences</c>).</summary>
    public async Task WaitForPhaseAsync(string phase, string name = "upgrade")
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            var deployment = await PollAsync(name);
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
            var deployment = await PollAsync(name);
            if (Normalize(deployment.GetProperty("replication").GetProperty("state").GetString()) == "REPLICATING")
            {
                return;
            }

            await Task.Delay(250);
        }

        throw new TimeoutException($"replication of {name} did not resume within {timeout}");
    }
}

public static class CliResultAssertions
{
    public static void ShouldSucceed(this CliResult result) => result.ExitCode.ShouldBe(0, result.ToString());
}
