using System.Data.Common;
using System.Globalization;
using System.Text.Json;
using Teal.Core.Engines;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests;

/// <summary>
/// What every end-to-end setup shares, whatever blue's engine: <c>teal serve</c> and the
/// <c>teal</c> CLI, blue registered as <c>app</c> with an endpoint of Teal's proxy, the
/// application's database and account, and the deployment driven through the CLI.
/// <see cref="BlueGreenScenario"/> (PostgreSQL) and <see cref="MariaDbScenario"/> add their
/// engine's server, schema and client library.
/// </summary>
public abstract class Scenario : IAsyncDisposable
{
    public const string Database = "app";

    /// <summary>The application's role or account: Teal copies it (with its password hash) to green, so clients log in on either side.</summary>
    public const string AppUser = "app_user";

    public const string AppPassword = "app-secret-for-tests";

    protected Scenario(TealProcess teal, IAsyncDisposable blue, int endpointPort)
    {
        Teal = teal;
        Cli = new TealCli(teal);
        BlueServer = blue;
        EndpointPort = endpointPort;
    }

    public TealProcess Teal { get; }

    public TealCli Cli { get; }

    public int EndpointPort { get; }

    /// <summary>The engine version <see cref="CreateDeploymentAsync"/> asks for green.</summary>
    protected abstract string GreenVersion { get; }

    private IAsyncDisposable BlueServer { get; }

    /// <summary><c>teal create NAME --source app --target-engine-version GREEN --wait</c>; the deployment is AVAILABLE.</summary>
    public async Task<JsonElement> CreateDeploymentAsync(string name = "upgrade")
    {
        var created = await Cli.RunAsync(["create", name, "--source", "app", "--target-engine-version", GreenVersion, "--wait"], TimeSpan.FromMinutes(5));
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

    private static readonly HttpClient Api = new() { Timeout = TimeSpan.FromSeconds(30) };

    /// <summary>
    /// The deployment as <c>teal show --output json</c> prints it, read from the API (the body
    /// the CLI prints) for the loops that wait on it: a <c>teal</c> process per poll cost a
    /// quarter second of CPU on the suite's two cores, taken from the switchover it waited on.
    /// What a test asserts on is read through the CLI (<see cref="ShowAsync"/>).
    /// </summary>
    public async Task<JsonElement> PollAsync(string name = "upgrade")
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, $"{Teal.Url}/api/deployments/{Uri.EscapeDataString(name)}");
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", Teal.Token);
        using var response = await Api.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        response.IsSuccessStatusCode.ShouldBeTrue($"GET deployment {name}: {(int)response.StatusCode} {body}");
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    /// <summary>Polls the deployment until the status is one of <paramref name="statuses"/>.</summary>
    public async Task<JsonElement> WaitForStatusAsync(string name, TimeSpan timeout, params string[] statuses)
    {
        var deadline = DateTime.UtcNow + timeout;
        JsonElement deployment;
        do
        {
            deployment = await PollAsync(name);
            if (statuses.Contains(Status(deployment)))
            {
                return deployment;
            }

            await Task.Delay(250);
        }
        while (DateTime.UtcNow < deadline);
        throw new TimeoutException($"deployment {name} did not reach {string.Join("/", statuses)} within {timeout}: {deployment}\n{Teal.Log}");
    }

    /// <summary>Status as the API spells it (<c>SWITCHOVER_COMPLETED</c>).</summary>
    public static string Status(JsonElement deployment) => Normalize(deployment.GetProperty("status").GetString());

    public static string Normalize(string? value) =>
        System.Text.RegularExpressions.Regex.Replace(value ?? string.Empty, "(?<=[a-z])(?=[A-Z])", "_").Replace('-', '_').ToUpperInvariant();

    public async ValueTask DisposeAsync()
    {
        await Teal.DisposeAsync();
        await BlueServer.DisposeAsync();
        GC.SuppressFinalize(this);
    }

    /// <summary>
    /// The connection Teal hands out for an instance (<c>teal instance url</c>, with its
    /// password; explicit request); with <paramref name="asTeal"/>, as Teal's own login, the
    /// one a fenced instance accepts. <paramref name="parse"/> is the engine's URI parser.
    /// </summary>
    protected async Task<ConnectionInfo> InstanceAsync(string instance, bool asTeal, Func<string, ConnectionInfo> parse)
    {
        ArgumentNullException.ThrowIfNull(parse);
        var url = asTeal ? await Cli.RunAsync("instance", "url", instance, "--as-teal") : await Cli.RunAsync("instance", "url", instance);
        url.ShouldSucceed();
        return parse(url.Stdout.Trim());
    }

    /// <summary>One value, on a connection of its own (disposed here).</summary>
    protected static async Task<T> ScalarAsync<T>(DbConnection connection, string sql)
    {
        ArgumentNullException.ThrowIfNull(connection);
        await using (connection)
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = sql;
            var value = (await command.ExecuteScalarAsync())!;
            // MariaDB answers COUNT(*) as a long and a flag as an int where PostgreSQL has the exact type.
            return value is T typed ? typed : (T)Convert.ChangeType(value, typeof(T), CultureInfo.InvariantCulture);
        }
    }

    /// <summary>One statement, on a connection of its own (disposed here).</summary>
    protected static async Task ExecuteAsync(DbConnection connection, string sql)
    {
        ArgumentNullException.ThrowIfNull(connection);
        await using (connection)
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = sql;
            await command.ExecuteNonQueryAsync();
        }
    }

    /// <summary>
    /// Whether a plain write (an INSERT into <c>orders</c>, rolled back) is accepted on
    /// <paramref name="connection"/> (disposed here). A fenced server refuses the login
    /// (<paramref name="refusesLogin"/>) or the write (<paramref name="refusesWrite"/>).
    /// </summary>
    protected static async Task<bool> AcceptsWritesAsync(DbConnection connection, Func<DbException, bool> refusesLogin, Func<DbException, bool> refusesWrite)
    {
        ArgumentNullException.ThrowIfNull(connection);
        await using (connection)
        {
            try
            {
                await connection.OpenAsync();
            }
            catch (DbException ex) when (refusesLogin(ex))
            {
                return false;
            }

            await using var transaction = await connection.BeginTransactionAsync();
            try
            {
                await using var insert = connection.CreateCommand();
                insert.Transaction = transaction;
                insert.CommandText = "INSERT INTO orders (note) VALUES ('write check')";
                await insert.ExecuteNonQueryAsync();
                await transaction.RollbackAsync();
                return true;
            }
            catch (DbException ex) when (refusesWrite(ex))
            {
                return false;
            }
        }
    }
}
