using Xunit;

namespace Teal.Testing;

/// <summary>
/// One PostgreSQL server per test class (xunit class fixture). Classes run in parallel, each
/// with its own servers on their own ports; disposal runs whether the tests passed or not.
/// </summary>
public abstract class PostgresFixture(string version) : IAsyncLifetime
{
    private PostgresServer? _server;

    public PostgresServer Server => _server ?? throw new InvalidOperationException("the fixture has not started");

    public async Task InitializeAsync() => _server = await PostgresServer.StartAsync(version);

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
    }
}

public sealed class Postgres15Fixture() : PostgresFixture("15");

public sealed class Postgres17Fixture() : PostgresFixture("17");

/// <summary>PostgreSQL 15 blue and PostgreSQL 17 green, started together, each with <paramref name="parameters"/>.</summary>
public abstract class BlueGreenServers(IReadOnlyDictionary<string, string>? parameters) : IAsyncLifetime
{
    private PostgresServer? _blue;
    private PostgresServer? _green;

    public PostgresServer Blue => _blue ?? throw new InvalidOperationException("the fixture has not started");

    public PostgresServer Green => _green ?? throw new InvalidOperationException("the fixture has not started");

    public async Task InitializeAsync()
    {
        var blue = PostgresServer.StartAsync("15", parameters);
        var green = PostgresServer.StartAsync("17", parameters);
        // Start both even if one fails, so that the other is disposed rather than leaked.
        try
        {
            await Task.WhenAll(blue, green);
        }
        finally
        {
            _blue = blue.IsCompletedSuccessfully ? blue.Result : null;
            _green = green.IsCompletedSuccessfully ? green.Result : null;
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
}

/// <summary>The case every blue/green test covers: PostgreSQL 15 blue, PostgreSQL 17 green.</summary>
public sealed class BlueGreenFixture() : BlueGreenServers(null);
