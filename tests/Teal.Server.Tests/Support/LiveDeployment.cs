using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Teal.Postgres.Instances;
using Teal.Testing;

namespace Teal.Server.Tests.Support;

/// <summary>
/// An in-process <c>teal serve</c> with a PostgreSQL 15 blue (<c>app</c>, behind a proxy endpoint)
/// holding an <c>orders</c> table, and an AVAILABLE deployment <c>orders</c> to a managed
/// PostgreSQL 17 green: what the dashboard and metrics tests look at.
/// </summary>
public sealed class LiveDeployment : IAsyncDisposable
{
    public const string Name = "orders";

    private LiveDeployment(TealHost teal, PostgresServer blue, int endpointPort)
    {
        Teal = teal;
        Blue = blue;
        EndpointPort = endpointPort;
    }

    public TealHost Teal { get; }

    public PostgresServer Blue { get; }

    public int EndpointPort { get; }

    /// <summary>Connections through Teal's endpoint in front of blue (then green).</summary>
    public string EndpointConnectionString => new NpgsqlConnectionStringBuilder(Blue.ConnectionString()) { Host = "127.0.0.1", Port = EndpointPort }.ConnectionString;

    public static async Task<LiveDeployment> StartAsync(Action<IServiceCollection>? configure = null, int targetReaders = 0)
    {
        var blue = await PostgresServer.StartAsync("15");
        TealHost? teal = null;
        try
        {
            teal = await TealHost.StartAsync(configure: configure);
            await blue.ExecuteAsync("CREATE TABLE orders (id bigserial PRIMARY KEY, note text NOT NULL)");
            await blue.ExecuteAsync("INSERT INTO orders (note) SELECT 'order ' || g FROM generate_series(1, 1000) g");
            var live = new LiveDeployment(teal, blue, ManagedPostgres.FreePort());
            using var client = teal.Client();
            (await client.PostAsJsonAsync("/api/instances", new { name = "app", connection = blue.Uri(), endpoint = $"127.0.0.1:{live.EndpointPort}" })).EnsureSuccessStatusCode();
            (await client.PostAsJsonAsync("/api/deployments", new { name = Name, source = "app", targetEngineVersion = "17", targetReaders })).EnsureSuccessStatusCode();
            await live.WaitForStatusAsync("AVAILABLE", TimeSpan.FromMinutes(3));
            return live;
        }
        catch
        {
            if (teal is not null)
            {
                await teal.DisposeAsync();
            }

            await blue.DisposeAsync();
            throw;
        }
    }

    public async Task<JsonElement> ShowAsync()
    {
        using var client = Teal.Client(withToken: false);
        return JsonDocument.Parse(await client.GetStringAsync($"/api/deployments/{Name}")).RootElement.Clone();
    }

    public async Task<JsonElement> WaitForStatusAsync(string status, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        JsonElement deployment;
        do
        {
            deployment = await ShowAsync();
            if (deployment.GetProperty("status").GetString() == status)
            {
                return deployment;
            }

            await Task.Delay(250);
        }
        while (DateTime.UtcNow < deadline);
        throw new TimeoutException($"deployment {Name} did not become {status} within {timeout}: {deployment}");
    }

    public async Task<string> ScrapeAsync()
    {
        using var client = Teal.Client(withToken: false);
        return await client.GetStringAsync("/metrics");
    }

    public async ValueTask DisposeAsync()
    {
        await Teal.DisposeAsync();
        await Blue.DisposeAsync();
    }
}
