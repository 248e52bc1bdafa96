using System.Net;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;
using Teal.Proxy.Sessions;
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

        // Blue and green know the application's role with the same password and the very same
        // SCRAM verifier, as a deployment's copy of blue's roles (pg_dumpall) leaves them; each
        // test server's own superuser password differs.
        await Blue.ExecuteAsync($"create role {AppUser} login superuser password '{AppPassword}'");
        var verifier = await Blue.ScalarAsync<string>($"select rolpassword from pg_authid where rolname = '{AppUser}'");
        await Green.ExecuteAsync($"create role {AppUser} login superuser password '{verifier}'");
    }

    /// <summary>The proxy's auth query, answered from the test servers' catalogs.</summary>
    public IScramVerifierSource Verifiers => new CatalogVerifiers(this);

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

    public static ProxyEndpoint StartEndpoint(EndpointTarget target, string name = "app", IScramVerifierSource? verifiers = null, ProxyOptions? options = null, ILogger? logger = null) =>
        ProxyEndpoint.Start(name, new IPEndPoint(IPAddress.Loopback, 0), target, options ?? new ProxyOptions(), logger ?? NullLogger.Instance, TimeProvider.System, verifiers: verifiers);

    /// <summary>Pause, drain, flip to <paramref name="to"/>, resume: the endpoint's part of a switchover.</summary>
    public static async Task<EndpointDrainResult> SwitchAsync(ProxyEndpoint endpoint, EndpointTarget to, TimeSpan? budget = null)
    {
        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var drained = await endpoint.DrainAsync(budget ?? TimeSpan.FromSeconds(20), CancellationToken.None);
        await endpoint.FlipAsync(to, CancellationToken.None);
        await endpoint.ResumeAsync(CancellationToken.None);
        return drained;
    }

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

internal sealed class CatalogVerifiers(ProxyServersFixture servers) : IScramVerifierSource
{
    public async Task<string?> ReadAsync(EndpointTarget target, string role, CancellationToken cancellationToken)
    {
        var server = target.Port == servers.Blue.Port ? servers.Blue : servers.Green;
        await using var connection = await server.OpenAsync(cancellationToken: cancellationToken);
        await using var command = new NpgsqlCommand("select rolpassword from pg_authid where rolname = $1", connection) { Parameters = { new() { Value = role } } };
        return await command.ExecuteScalarAsync(cancellationToken) as string;
    }
}

/// <summary>The proxy's database tests share one blue/green pair and run one after another.</summary>
[CollectionDefinition(Name)]
public sealed class ProxyServersGroup : ICollectionFixture<ProxyServersFixture>
{
    public const string Name = "proxy servers";
}
