using Teal.Postgres.Replication;
using Teal.Testing;

namespace Teal.Postgres.Tests.Replication;

/// <summary>
/// One deployment of the realistic schema (a million-row table included) from PostgreSQL 15 to
/// 17, created once for a test class through the link's own create path.
/// </summary>
public sealed class ReplicatedDeploymentFixture : IAsyncLifetime
{
    private readonly RoomyBlueGreenFixture _servers = new();
    private PostgresReplicationLink? _link;

    public const string Database = "shop";

    public string Name { get; } = LinkTestKit.NewName("teal");

    public PostgresServer Blue => _servers.Blue;

    public PostgresServer Green => _servers.Green;

    public PostgresReplicationLink Link => _link ?? throw new InvalidOperationException("the fixture has not started");

    /// <summary>Seconds from an empty green to REPLICATING (schema copy, initial copy, catch-up).</summary>
    public double CreateSeconds { get; private set; }

    public async Task InitializeAsync()
    {
        await _servers.InitializeAsync();
        await LinkTestKit.CreateDatabaseAsync(Blue, Database, RealisticSchema.Sql);
        _link = LinkTestKit.Link(Blue, Green, Database, Name);
        var started = System.Diagnostics.Stopwatch.StartNew();
        await LinkTestKit.StartAsync(_link);
        CreateSeconds = started.Elapsed.TotalSeconds;
    }

    public async Task DisposeAsync()
    {
        if (_link is not null)
        {
            await _link.DisposeAsync();
        }

        await _servers.DisposeAsync();
    }
}
