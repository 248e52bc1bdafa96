using System.Net;
using System.Net.Sockets;
using Teal.Testing;

namespace Teal.Postgres.Tests.Harness;

/// <summary>The test PgBouncer starts where it says it listens, runs as the server user, and goes away on dispose.</summary>
public sealed class PgBouncerHarnessTests(Postgres15Fixture postgres) : IClassFixture<Postgres15Fixture>
{
    [Fact]
    public async Task Start_PortAlreadyTaken_MovesToAFreePort()
    {
        using var squatter = new TcpListener(IPAddress.Loopback, 0);
        squatter.Start();
        var taken = ((IPEndPoint)squatter.LocalEndpoint).Port;

        await using var bouncer = await PgBouncerServer.StartAsync(postgres.Server, new PgBouncerServerOptions { Port = taken });

        bouncer.Port.ShouldNotBe(taken);
        await using var client = await bouncer.OpenAsync();
        await using var command = new Npgsql.NpgsqlCommand("SELECT current_user", client);
        (await command.ExecuteScalarAsync()).ShouldBe(bouncer.AppUser);
    }

    [Fact]
    public async Task Dispose_StopsPgBouncerAndRemovesItsDirectory()
    {
        var bouncer = await PgBouncerServer.StartAsync(postgres.Server);
        var pid = int.Parse(await File.ReadAllTextAsync(bouncer.PidFile), System.Globalization.CultureInfo.InvariantCulture);
        // PgBouncer refuses root: it must run as the server user.
        var uid = File.ReadAllLines($"/proc/{pid}/status").Single(l => l.StartsWith("Uid:", StringComparison.Ordinal)).Split('\t', StringSplitOptions.RemoveEmptyEntries)[1];
        uid.ShouldNotBe("0");
        (await File.ReadAllTextAsync($"/proc/{pid}/comm")).Trim().ShouldBe("pgbouncer");

        await bouncer.DisposeAsync();

        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (IsRunning(pid) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        IsRunning(pid).ShouldBeFalse();
        Directory.Exists(bouncer.Directory).ShouldBeFalse();
    }

    // A killed daemon may linger as a zombie until init reaps it: that is not running.
    private static bool IsRunning(int pid)
    {
        try
        {
            return !File.ReadAllLines($"/proc/{pid}/status").Any(l => l.StartsWith("State:", StringComparison.Ordinal) && l.Contains('Z', StringComparison.Ordinal));
        }
        catch (IOException)
        {
            return false;
        }
    }
}
