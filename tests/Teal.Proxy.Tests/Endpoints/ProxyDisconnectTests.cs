using System.Diagnostics;
using System.Globalization;
using Npgsql;
using static Teal.Proxy.Tests.Endpoints.ProxyServersFixture;

namespace Teal.Proxy.Tests.Endpoints;

[Collection(ProxyServersGroup.Name)]
public sealed class ProxyDisconnectTests(ProxyServersFixture servers)
{
    [Fact]
    public async Task ClientCloses_BackendEnds_AndActiveReturnsToZero()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        var connection = await OpenThroughAsync(endpoint, servers.Blue);
        var pid = await ScalarAsync<int>(connection, "select pg_backend_pid()");
        endpoint.Stats.Active.ShouldBe(1);

        // Dispose without pooling closes the socket (after sending Terminate).
        await connection.DisposeAsync();

        (await EventuallyAsync(() => endpoint.Stats.Active == 0)).ShouldBeTrue();
        (await EventuallyAsync(async () => !await BackendExistsAsync(pid))).ShouldBeTrue($"backend {pid} outlived its client");
    }

    [Fact]
    public async Task ClientKilled_BackendEnds_AndActiveReturnsToZero()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        var start = new ProcessStartInfo("psql")
        {
            ArgumentList = { "-X", "-At", "-h", "127.0.0.1", "-p", endpoint.LocalEndPoint.Port.ToString(CultureInfo.InvariantCulture), "-U", servers.Blue.User, "-d", "postgres" },
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
        };
        start.Environment["PGPASSWORD"] = servers.Blue.Password;
        using var psql = Process.Start(start)!; // Start returns null only for shell-executed documents.
        await psql.StandardInput.WriteLineAsync("select pg_backend_pid();");
        await psql.StandardInput.FlushAsync();
        var pid = int.Parse((await psql.StandardOutput.ReadLineAsync())!, CultureInfo.InvariantCulture); // psql prints the pid, then waits for more input.
        endpoint.Stats.Active.ShouldBe(1);

        // SIGKILL: the client's socket closes with no Terminate message, as when a client crashes.
        psql.Kill();
        await psql.WaitForExitAsync();

        (await EventuallyAsync(() => endpoint.Stats.Active == 0)).ShouldBeTrue();
        (await EventuallyAsync(async () => !await BackendExistsAsync(pid))).ShouldBeTrue($"backend {pid} outlived its client");
    }

    [Fact]
    public async Task ServerTerminatesBackend_ClientSeesAdminShutdown_AndActiveReturnsToZero()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        await using var connection = await OpenThroughAsync(endpoint, servers.Blue);
        var pid = await ScalarAsync<int>(connection, "select pg_backend_pid()");

        await servers.Blue.ExecuteAsync($"select pg_terminate_backend({pid})");
        (await EventuallyAsync(() => endpoint.Stats.Active == 0)).ShouldBeTrue();

        var error = await Should.ThrowAsync<NpgsqlException>(ScalarAsync<int>(connection, "select 1"));
        var sqlState = (error as PostgresException)?.SqlState ?? (error.InnerException as PostgresException)?.SqlState;
        if (sqlState is not null)
        {
            sqlState.ShouldBe(PostgresErrorCodes.AdminShutdown);
        }

        connection.State.ShouldBe(System.Data.ConnectionState.Closed);
    }

    [Fact]
    public async Task EndpointStops_OpenAndHeldConnectionsEnd_NothingLeaks()
    {
        var endpoint = StartEndpoint(servers.BlueTarget);
        await using var open = await OpenThroughAsync(endpoint, servers.Blue);
        var pid = await ScalarAsync<int>(open, "select pg_backend_pid()");
        await endpoint.PauseAsync(TimeSpan.FromMinutes(1), CancellationToken.None);
        var held = OpenThroughAsync(endpoint, servers.Blue);
        (await EventuallyAsync(() => endpoint.Stats.Held == 1)).ShouldBeTrue();

        await endpoint.StopAsync();

        await Should.ThrowAsync<NpgsqlException>(held);
        endpoint.Stats.Active.ShouldBe(0);
        endpoint.Stats.Held.ShouldBe(0);
        (await EventuallyAsync(async () => !await BackendExistsAsync(pid))).ShouldBeTrue();
    }

    private async Task<bool> BackendExistsAsync(int pid) =>
        await servers.Blue.ScalarAsync<long>($"select count(*) from pg_stat_activity where pid = {pid}") > 0;
}
