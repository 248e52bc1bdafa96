using System.Net;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using MySqlConnector;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;
using Teal.Testing;

namespace Teal.Proxy.Tests.MySql;

/// <summary>
/// Blue and green: two MariaDB 10.11 servers (room for 600 connections, packets up to 64 MiB so
/// values larger than one 16 MiB protocol packet pass), shared by one test class.
/// </summary>
public sealed class MySqlProxyServersFixture : IAsyncLifetime
{
    public const string AppUser = "app";

    public const string AppPassword = "app-secret-1";

    private MariaDbServer? _blue;
    private MariaDbServer? _green;

    public MariaDbServer Blue => _blue ?? throw new InvalidOperationException("the fixture has not started");

    public MariaDbServer Green => _green ?? throw new InvalidOperationException("the fixture has not started");

    public EndpointTarget BlueTarget => new("blue", Blue.Host, Blue.Port, "app");

    public EndpointTarget GreenTarget => new("green", Green.Host, Green.Port, "app");

    public async Task InitializeAsync()
    {
        var parameters = new Dictionary<string, string> { ["max-connections"] = "600", ["max-allowed-packet"] = "64M" };
        var blue = MariaDbServer.StartAsync(parameters: parameters);
        var green = MariaDbServer.StartAsync(parameters: parameters);
        try
        {
            await Task.WhenAll(blue, green);
        }
        finally
        {
            _blue = blue.IsCompletedSuccessfully ? blue.Result : null;
            _green = green.IsCompletedSuccessfully ? green.Result : null;
        }

        // Blue and green know the application's account with the same password, as in a deployment.
        foreach (var server in new[] { Blue, Green })
        {
            await server.ExecuteAsync(
                $"""
                CREATE DATABASE app;
                CREATE USER {AppUser}@'%' IDENTIFIED BY '{AppPassword}';
                GRANT ALL PRIVILEGES ON *.* TO {AppUser}@'%';
                """);
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

    public static ProxyEndpoint StartEndpoint(EndpointTarget target, string name = "app", ILogger? logger = null, ProxyOptions? options = null) =>
        ProxyEndpoint.Start(name, new IPEndPoint(IPAddress.Loopback, 0), target, options ?? new ProxyOptions(), logger ?? NullLogger.Instance, TimeProvider.System, protocol: ProxyProtocol.MySql);

    /// <summary>The application's connection string through <paramref name="endpoint"/>.</summary>
    public static string Through(ProxyEndpoint endpoint, int timeoutSeconds = 15, MySqlSslMode ssl = MySqlSslMode.Preferred) =>
        new MySqlConnectionStringBuilder
        {
            Server = endpoint.LocalEndPoint.Address.ToString(),
            Port = (uint)endpoint.LocalEndPoint.Port,
            UserID = AppUser,
            Password = AppPassword,
            Database = "app",
            Pooling = false,
            ConnectionTimeout = (uint)timeoutSeconds,
            DefaultCommandTimeout = 120,
            SslMode = ssl,
            AllowLoadLocalInfile = true,
            AllowUserVariables = true,
            // Tests run statements of an open transaction through plain commands.
            IgnoreCommandTransaction = true,
        }.ConnectionString;

    public static async Task<MySqlConnection> OpenThroughAsync(ProxyEndpoint endpoint, int timeoutSeconds = 15)
    {
        var connection = new MySqlConnection(Through(endpoint, timeoutSeconds));
        await connection.OpenAsync();
        return connection;
    }

    /// <summary>Runs the mariadb command-line client through an endpoint's port: its exit code, output and errors.</summary>
    public static async Task<(int Exit, string Output, string Error)> MariaDbCliAsync(int port, string user, string password, string[] options, string sql)
    {
        var start = new System.Diagnostics.ProcessStartInfo("mariadb") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var argument in (string[])["--no-defaults", "--batch", "-h", "127.0.0.1", "-P", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "-u", user, .. options, "-e", sql])
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment["MYSQL_PWD"] = password;
        using var process = System.Diagnostics.Process.Start(start)!; // Start returns null only for shell-executed documents.
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        return (process.ExitCode, await output, await error);
    }

    public static async Task<T> ScalarAsync<T>(MySqlConnection connection, string sql)
    {
        await using var command = new MySqlCommand(sql, connection);
        var value = await command.ExecuteScalarAsync();
        return (T)Convert.ChangeType(value!, typeof(T), System.Globalization.CultureInfo.InvariantCulture);
    }

    public static async Task ExecuteAsync(MySqlConnection connection, string sql)
    {
        await using var command = new MySqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }
}

/// <summary>The MySQL proxy tests share one blue/green pair and run one after another.</summary>
[CollectionDefinition(Name)]
public sealed class MySqlProxyServersGroup : ICollectionFixture<MySqlProxyServersFixture>
{
    public const string Name = "mysql proxy servers";
}
