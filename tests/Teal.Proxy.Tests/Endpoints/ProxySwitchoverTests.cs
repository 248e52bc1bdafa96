using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
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
        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);

        var held = OpenThroughAsync(endpoint, servers.Blue);
        (await EventuallyAsync(() => endpoint.Stats.Held == 1)).ShouldBeTrue();
        held.IsCompleted.ShouldBeFalse();
        endpoint.Paused.ShouldBeTrue();

        var drained = await endpoint.DrainAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
        await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);
        await endpoint.ResumeAsync(CancellationToken.None);

        await using var connection = await held;
        (await ScalarAsync<int>(connection, "select inet_server_port()")).ShouldBe(servers.Green.Port);
        (await ScalarAsync<string>(connection, "show server_version")).ShouldStartWith("17");
        drained.ShouldBe(new EndpointDrainResult(0, 0));
        endpoint.Target.ShouldBe(servers.GreenTarget);
        endpoint.Paused.ShouldBeFalse();
        endpoint.Stats.Held.ShouldBe(0);
        // How long pause, drain, flip and resume take is measured by bench/switchover, not here.
    }

    /// <summary>
    /// A reader endpoint's route published again with the same servers — as named after a rename
    /// too — keeps their turn, so new connections go on alternating instead of starting over at the first.
    /// </summary>
    [Fact]
    public async Task ReaderRoute_PublishedAgainWithTheSameServers_KeepsTheRoundRobinTurn()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        EndpointTarget[] readers = [servers.BlueTarget, servers.GreenTarget];
        await endpoint.FlipAsync(readers.Select(r => r with { Instance = r.Instance + "-before-the-flip" }).ToList(), CancellationToken.None);
        var unpooled = new NpgsqlConnectionStringBuilder(Through(endpoint, servers.Blue)) { Pooling = false }.ConnectionString;
        var ports = new List<int>();
        for (var i = 0; i < 4; i++)
        {
            await using (var connection = new NpgsqlConnection(unpooled))
            {
                await connection.OpenAsync();
                ports.Add(await ScalarAsync<int>(connection, "select inet_server_port()"));
            }

            await endpoint.FlipAsync(readers, CancellationToken.None); // as a route table fetched again does
        }

        ports.ShouldBe([servers.Blue.Port, servers.Green.Port, servers.Blue.Port, servers.Green.Port]);
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
        // The client is told why, as pg_terminate_backend would tell it, not left with a lost connection.
        var error = await Should.ThrowAsync<NpgsqlException>(transaction.CommitAsync());
        var told = (error as PostgresException ?? error.InnerException as PostgresException).ShouldNotBeNull(error.ToString());
        told.SqlState.ShouldBe(PostgresErrorCodes.AdminShutdown);
        told.MessageText.ShouldBe($"Teal endpoint {endpoint.Name} closed this connection for a switchover: its transaction was still open when the drain budget ran out, and was rolled back; reconnect");
        (await EventuallyAsync(async () => await servers.Blue.ScalarAsync<long>("select count(*) from pg_stat_activity where query like 'insert into cut_rows%'") == 0)).ShouldBeTrue();
        (await servers.Blue.ScalarAsync<long>("select count(*) from cut_rows")).ShouldBe(0);
        endpoint.Stats.Active.ShouldBe(0);
    }

    /// <summary>A statement still running at the budget (a COMMIT among it may have run): the client is told its outcome is unknown.</summary>
    [Fact]
    public async Task StatementStillRunningAtBudget_IsCut_AndTheClientToldItsOutcomeIsUnknown()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        await using var connection = await OpenThroughAsync(endpoint, servers.Blue);
        var running = ScalarAsync<object>(connection, "select pg_sleep(30)");
        (await EventuallyAsync(async () => await servers.Blue.ScalarAsync<long>("select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'") == 1)).ShouldBeTrue();

        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var result = await endpoint.DrainAsync(TimeSpan.FromMilliseconds(300), CancellationToken.None);

        result.ShouldBe(new EndpointDrainResult(0, 1));
        var error = await Should.ThrowAsync<NpgsqlException>(running);
        var told = (error as PostgresException ?? error.InnerException as PostgresException).ShouldNotBeNull(error.ToString());
        told.SqlState.ShouldBe(PostgresErrorCodes.AdminShutdown);
        told.MessageText.ShouldContain("a statement was still running when the drain budget ran out, and whether it committed is unknown");
        await endpoint.ResumeAsync(CancellationToken.None);
        // The backend sleeps on without its client (in a switchover drain-blue terminates it): end it
        // here, for the tests that count blue's sessions.
        await servers.Blue.ExecuteAsync("select pg_terminate_backend(pid) from pg_stat_activity where query = 'select pg_sleep(30)'");
    }

    /// <summary>An endpoint that stops tells its open sessions so, as a PostgreSQL server shutting down does.</summary>
    [Fact]
    public async Task EndpointStopping_OpenSessionsAreToldWhy()
    {
        var endpoint = StartEndpoint(servers.BlueTarget);
        await using var connection = await OpenThroughAsync(endpoint, servers.Blue);
        await using var transaction = await connection.BeginTransactionAsync();
        await Execute(connection, "select 1");

        await endpoint.StopAsync();

        var error = await Should.ThrowAsync<NpgsqlException>(Execute(connection, "select 2"));
        var told = (error as PostgresException ?? error.InnerException as PostgresException).ShouldNotBeNull(error.ToString());
        told.SqlState.ShouldBe(PostgresErrorCodes.AdminShutdown);
        told.MessageText.ShouldBe($"Teal endpoint {endpoint.Name} is shutting down; reconnect");
    }

    [Fact]
    public async Task PausedAndDrained_NoClientTrafficReachesBlue()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        var clients = await Task.WhenAll(Enumerable.Range(0, 5).Select(_ => OpenThroughAsync(endpoint, servers.Blue)));
        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        await endpoint.DrainAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
        // A drained session's backend ends a moment after the proxy's Terminate (on a loaded
        // machine, after the drain returns): count once they have.
        (await EventuallyAsync(async () => await BlueSessionsAsync() == 0)).ShouldBeTrue("every drained session's backend on blue ends");
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

    [Fact]
    public async Task ClientStillLoggingInAtDrain_IsClosedAtOnce_NotAtTheEndOfTheBudget()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, name: "orders");
        using var client = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(endpoint.LocalEndPoint);
        await client.SendAsync(StartupPacket(AppUser, "postgres"));
        // Blue asks for the SCRAM exchange; this client never answers, so its login stays open.
        var (type, _) = await ReadMessageAsync(client);
        type.ShouldBe((byte)'R');
        (await EventuallyAsync(() => endpoint.Stats.Active == 1)).ShouldBeTrue();

        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var clock = Stopwatch.StartNew();
        var result = await endpoint.DrainAsync(TimeSpan.FromSeconds(10), CancellationToken.None);

        clock.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(2), "a login in progress has no transaction to wait for");
        result.ShouldBe(new EndpointDrainResult(1, 0));
        var (errorType, body) = await ReadMessageAsync(client);
        errorType.ShouldBe((byte)'E');
        var fields = Encoding.UTF8.GetString(body);
        fields.ShouldContain("C" + PostgresErrorCodes.AdminShutdown + "\0");
        fields.ShouldContain("Teal endpoint orders closed this connection during login for a switchover; reconnect");
        // The login relay sees the close on its next read; the count follows a moment later.
        (await EventuallyAsync(() => endpoint.Stats.Active == 0)).ShouldBeTrue();
        await endpoint.ResumeAsync(CancellationToken.None);
    }

    private static byte[] StartupPacket(string user, string database)
    {
        var parameters = Encoding.UTF8.GetBytes($"user\0{user}\0database\0{database}\0\0");
        var packet = new byte[8 + parameters.Length];
        BinaryPrimitives.WriteInt32BigEndian(packet, packet.Length);
        BinaryPrimitives.WriteInt32BigEndian(packet.AsSpan(4), 196608); // protocol 3.0
        parameters.CopyTo(packet, 8);
        return packet;
    }

    /// <summary>One backend message: its type byte and its body.</summary>
    private static async Task<(byte Type, byte[] Body)> ReadMessageAsync(Socket socket)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var header = new byte[5];
        await ReadExactlyAsync(socket, header, timeout.Token);
        var body = new byte[BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(1)) - 4];
        await ReadExactlyAsync(socket, body, timeout.Token);
        return (header[0], body);
    }

    private static async Task ReadExactlyAsync(Socket socket, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        while (buffer.Length > 0)
        {
            var read = await socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);
            read.ShouldBeGreaterThan(0, "the proxy closed the socket before the whole message arrived");
            buffer = buffer[read..];
        }
    }

    private static async Task Execute(NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    private async Task<long> BlueSessionsAsync() =>
        await servers.Blue.ScalarAsync<long>("select count(*) from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()");
}
