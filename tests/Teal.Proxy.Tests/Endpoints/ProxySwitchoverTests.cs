using System.Diagnostics;
using Npgsql;
using Teal.Core.Endpoints;
using static Teal.Proxy.Tests.Endpoints.ProxyServersFixture;

namespace Teal.Proxy.Tests.Endpoints;

[Collection(ProxyServersGroup.Name)]
public sealed class ProxySwitchoverTests(ProxyServersFixture servers)
{
    [Fact]
    public async Task ClientConnectingDuringPause_ProceedsToGreenAfterFlipAndResume()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        var timings = new List<TimeSpan>();
        var clock = Stopwatch.StartNew();
        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        timings.Add(clock.Elapsed);

        var held = OpenThroughAsync(endpoint, servers.Blue);
        (await EventuallyAsync(() => endpoint.Stats.Held == 1)).ShouldBeTrue();
        held.IsCompleted.ShouldBeFalse();
        endpoint.Paused.ShouldBeTrue();

        clock.Restart();
        var drained = await endpoint.DrainAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
        timings.Add(clock.Elapsed);
        clock.Restart();
        await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);
        timings.Add(clock.Elapsed);
        clock.Restart();
        await endpoint.ResumeAsync(CancellationToken.None);
        timings.Add(clock.Elapsed);

        await using var connection = await held;
        (await ScalarAsync<int>(connection, "select inet_server_port()")).ShouldBe(servers.Green.Port);
        (await ScalarAsync<string>(connection, "show server_version")).ShouldStartWith("17");
        drained.ShouldBe(new EndpointDrainResult(0, 0));
        endpoint.Target.ShouldBe(servers.GreenTarget);
        endpoint.Paused.ShouldBeFalse();
        endpoint.Stats.Held.ShouldBe(0);
        timings.ShouldAllBe(t => t < TimeSpan.FromMilliseconds(5), $"pause, drain (nothing open), flip, resume took {string.Join(", ", timings.Select(t => t.TotalMilliseconds))} ms");
    }

    [Fact]
    public async Task HeldPastDeadline_ClientGetsCannotConnectNowNamingTheEndpoint()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, name: "orders");
        await endpoint.PauseAsync(TimeSpan.FromMilliseconds(500), CancellationToken.None);
        var clock = Stopwatch.StartNew();

        var error = await Should.ThrowAsync<PostgresException>(OpenThroughAsync(endpoint, servers.Blue));

        clock.Elapsed.ShouldBeGreaterThanOrEqualTo(TimeSpan.FromMilliseconds(450));
        error.SqlState.ShouldBe(PostgresErrorCodes.CannotConnectNow);
        error.MessageText.ShouldBe("Teal endpoint orders is paused for a switchover; retry");
        // Npgsql may try again without GSS encryption; every refused attempt is one counted error.
        endpoint.Stats.Errors.ShouldBeGreaterThanOrEqualTo(1);
        endpoint.Stats.Errors.ShouldBe(endpoint.Stats.Total);
        endpoint.Stats.Held.ShouldBe(0);
        endpoint.Stats.Active.ShouldBe(0);
    }

    [Fact]
    public async Task TransactionInFlightAtPause_CommitsThenDrainClosesTheConnection()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        await servers.Blue.ExecuteAsync("drop table if exists drain_rows; create table drain_rows(id int)");
        await using var connection = await OpenThroughAsync(endpoint, servers.Blue);
        await using var idle = await OpenThroughAsync(endpoint, servers.Blue);
        await using var transaction = await connection.BeginTransactionAsync();
        await Execute(connection, "insert into drain_rows values (1)");

        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var drain = endpoint.DrainAsync(TimeSpan.FromSeconds(20), CancellationToken.None);
        (await EventuallyAsync(() => endpoint.Stats.Active == 1)).ShouldBeTrue("the idle connection closes at once");
        drain.IsCompleted.ShouldBeFalse();
        await Execute(connection, "insert into drain_rows values (2)");
        await transaction.CommitAsync();
        var result = await drain.WaitAsync(TimeSpan.FromSeconds(5));

        result.ShouldBe(new EndpointDrainResult(2, 0));
        (await servers.Blue.ScalarAsync<long>("select count(*) from drain_rows")).ShouldBe(2);
        var error = await Should.ThrowAsync<NpgsqlException>(Execute(connection, "select 1"));
        (error as PostgresException ?? error.InnerException as PostgresException)?.SqlState.ShouldBe(PostgresErrorCodes.AdminShutdown);
        endpoint.Stats.Active.ShouldBe(0);
        await endpoint.ResumeAsync(CancellationToken.None);
    }

    [Fact]
    public async Task TransactionStillOpenAtBudget_IsCutAndRolledBack()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        await servers.Blue.ExecuteAsync("drop table if exists cut_rows; create table cut_rows(id int)");
        await using var connection = await OpenThroughAsync(endpoint, servers.Blue);
        await using var transaction = await connection.BeginTransactionAsync();
        await Execute(connection, "insert into cut_rows values (1)");

        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var result = await endpoint.DrainAsync(TimeSpan.FromMilliseconds(300), CancellationToken.None);

        result.ShouldBe(new EndpointDrainResult(0, 1));
        await Should.ThrowAsync<NpgsqlException>(transaction.CommitAsync());
        (await EventuallyAsync(async () => await servers.Blue.ScalarAsync<long>("select count(*) from pg_stat_activity where query like 'insert into cut_rows%'") == 0)).ShouldBeTrue();
        (await servers.Blue.ScalarAsync<long>("select count(*) from cut_rows")).ShouldBe(0);
        endpoint.Stats.Active.ShouldBe(0);
    }

    [Fact]
    public async Task PausedAndDrained_NoClientTrafficReachesBlue()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        var clients = await Task.WhenAll(Enumerable.Range(0, 5).Select(_ => OpenThroughAsync(endpoint, servers.Blue)));
        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        await endpoint.DrainAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
        var before = await BlueSessionsAsync();

        foreach (var client in clients)
        {
            await Should.ThrowAsync<NpgsqlException>(Execute(client, "select 1"));
            await client.DisposeAsync();
        }

        var late = OpenThroughAsync(endpoint, servers.Blue);
        (await EventuallyAsync(() => endpoint.Stats.Held == 1)).ShouldBeTrue();
        (await BlueSessionsAsync()).ShouldBe(before);
        before.ShouldBe(0);
        await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);
        await endpoint.ResumeAsync(CancellationToken.None);
        await using var resumed = await late;
        (await ScalarAsync<int>(resumed, "select inet_server_port()")).ShouldBe(servers.Green.Port);
    }

    [Fact]
    public async Task ReaderCanary_TwentyPercentOfNewConnectionsGoToGreen()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, name: "reader");
        await endpoint.SetCanaryAsync(servers.GreenTarget, 20, CancellationToken.None);
        var ports = new List<int>();
        for (var i = 0; i < 50; i++)
        {
            await using var connection = await OpenThroughAsync(endpoint, servers.Blue);
            ports.Add(await ScalarAsync<int>(connection, "select inet_server_port()"));
        }

        ports.Count(p => p == servers.Green.Port).ShouldBeInRange(8, 12);
        ports.Count(p => p == servers.Blue.Port).ShouldBeInRange(38, 42);
        endpoint.Stats.Total.ShouldBe(50);
    }

    private static async Task Execute(NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    private async Task<long> BlueSessionsAsync() =>
        await servers.Blue.ScalarAsync<long>("select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()");
}
