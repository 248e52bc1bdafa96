using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;
using Teal.Testing;

namespace Teal.Proxy.Tests.Endpoints;

/// <summary>
/// Blue (PostgreSQL 15, room for 600 connections so the proxy can be pushed past 500) and green
/// (PostgreSQL 17), shared by one test class.
/// </summary>
public sealed class ProxyServersFixture : IAsyncLifetime
{
    public const string AppUser = "app";

    public const string AppPassword = "app-secret-1";

    private PostgresServer? _blue;
    private PostgresServer? _green;

    public PostgresServer Blue => _blue ?? throw new InvalidOperationException("the fixture has not started");

    public PostgresServer Green => _green ?? throw new InvalidOperationException("the fixture has not started");

    public EndpointTarget BlueTarget => new("blue", Blue.Host, Blue.Port, "postgres");

    public EndpointTarget GreenTarget => new("green", Green.Host, Green.Port, "postgres");

    public async Task InitializeAsync()
    {
        var blue = PostgresServer.StartAsync("15", new Dictionary<string, string> { ["max_connections"] = "600" });
        var green = PostgresServer.StartAsync("17");
        try
        {
            await Task.WhenAll(blue, green);
        }
        finally
        {
            _blue = blue.IsCompletedSuccessfully ? blue.Result : null;
            _green = green.IsCompletedSuccessfully ? green.Result : null;
        }

        // Blue and green know the application's role with the same password, as they do in a
        // deployment (each test server's own superuser password differs).
        foreach (var server in new[] { Blue, Green })
        {
            await server.ExecuteAsync($"create role {AppUser} login superuser password '{AppPassword}'");
        }
    }

    public async Task DisposeAsync()
    {
        if (_blue is not null)
        {
            await _blue.DisposeAsync();
        }

        if (_green is not null)
        {
            await _green.DisposeAsync();
        }
    }

    public static ProxyEndpoint StartEndpoint(EndpointTarget target, string name = "app") =>
        ProxyEndpoint.Start(name, new IPEndPoint(IPAddress.Loopback, 0), target, new ProxyOptions(), NullLogger.Instance, TimeProvider.System);

    /// <summary>A connection string for <paramref name="server"/>'s credentials that goes through <paramref name="endpoint"/>.</summary>
    public static string Through(ProxyEndpoint endpoint, PostgresServer server, int timeoutSeconds = 15) =>
        new NpgsqlConnectionStringBuilder(server.ConnectionString())
        {
            Host = endpoint.LocalEndPoint.Address.ToString(),
            Port = endpoint.LocalEndPoint.Port,
            Username = AppUser,
            Password = AppPassword,
            Timeout = timeoutSeconds,
        }.ConnectionString;

    public static async Task<NpgsqlConnection> OpenThroughAsync(ProxyEndpoint endpoint, PostgresServer server, int timeoutSeconds = 15)
    {
        var connection = new NpgsqlConnection(Through(endpoint, server, timeoutSeconds));
        await connection.OpenAsync();
        return connection;
    }

    public static async Task<T> ScalarAsync<T>(NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        return (T)(await command.ExecuteScalarAsync())!; // The queries in these tests return one non-null value.
    }

    /// <summary>Polls <paramref name="condition"/> until it holds or <paramref name="timeout"/> passes.</summary>
    public static async Task<bool> EventuallyAsync(Func<Task<bool>> condition, TimeSpan? timeout = null)
    {
        var until = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(10));
        while (DateTime.UtcNow < until)
        {
            if (await condition())
            {
                return true;
            }

            await Task.Delay(20);
        }

        return await condition();
    }

    public static Task<bool> EventuallyAsync(Func<bool> condition, TimeSpan? timeout = null) =>
        EventuallyAsync(() => Task.FromResult(condition()), timeout);
}

/// <summary>The proxy's database tests share one blue/green pair and run one after another.</summary>
[CollectionDefinition(Name)]
public sealed class ProxyServersGroup : ICollectionFixture<ProxyServersFixture>
{
    public const string Name = "proxy servers";
}
