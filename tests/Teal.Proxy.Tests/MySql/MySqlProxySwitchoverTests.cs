using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using MySqlConnector;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;
using Teal.Proxy.Tests.Endpoints;
using static Teal.Proxy.Tests.MySql.MySqlProxyServersFixture;

namespace Teal.Proxy.Tests.MySql;

/// <summary>Pause, drain, flip and resume of a MySQL-protocol endpoint, and either side going away.</summary>
[Collection(MySqlProxyServersGroup.Name)]
public sealed class MySqlProxySwitchoverTests(MySqlProxyServersFixture servers)
{
    [Fact]
    public async Task ClientConnectingDuringPause_IsHeld_ThenProceedsToGreenAfterFlipAndResume()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);

        var held = OpenThroughAsync(endpoint, timeoutSeconds: 30);
        (await ProxyServersFixture.EventuallyAsync(() => endpoint.Stats.Held == 1)).ShouldBeTrue();
        await Task.Delay(500);
        held.IsCompleted.ShouldBeFalse("a connection accepted while paused waits for the resume");

        var drained = await endpoint.DrainAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
        await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);
        await endpoint.ResumeAsync(CancellationToken.None);

        await using var connection = await held;
        (await ScalarAsync<int>(connection, "SELECT @@port")).ShouldBe(servers.Green.Port);
        drained.ShouldBe(new EndpointDrainResult(0, 0));
        endpoint.Target.ShouldBe(servers.GreenTarget);
        endpoint.Paused.ShouldBeFalse();
        endpoint.Stats.Held.ShouldBe(0);
    }

    [Fact]
    public async Task HeldPastDeadline_ClientGetsAnErrorNamingTheEndpoint()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, name: "orders");
        await endpoint.PauseAsync(TimeSpan.FromMilliseconds(500), CancellationToken.None);
        var clock = Stopwatch.StartNew();

        var error = await Should.ThrowAsync<MySqlException>(OpenThroughAsync(endpoint));

        clock.Elapsed.ShouldBeGreaterThanOrEqualTo(TimeSpan.FromMilliseconds(450));
        error.Message.ShouldBe("Teal endpoint orders is paused for a switchover; retry");
        endpoint.Stats.Errors.ShouldBe(1);
        endpoint.Stats.Held.ShouldBe(0);
        endpoint.Stats.Active.ShouldBe(0);
    }

    [Fact]
    public async Task HeldClientThatHangsUp_FreesItsSlotBeforeTheResume()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, options: new ProxyOptions { MaxConnections = 1 });
        await endpoint.PauseAsync(TimeSpan.FromMinutes(1), CancellationToken.None);
        using (var client = new Socket(SocketType.Stream, ProtocolType.Tcp))
        {
            // A MySQL client sends nothing before the greeting: it waits, then gives up.
            await client.ConnectAsync(endpoint.LocalEndPoint);
            (await ProxyServersFixture.EventuallyAsync(() => endpoint.Stats.Held == 1)).ShouldBeTrue();
        }

        (await ProxyServersFixture.EventuallyAsync(() => endpoint.Stats.Held == 0)).ShouldBeTrue("the client hung up while held");
        endpoint.Stats.Active.ShouldBe(0);

        // Its slot under the cap is free again: the next client is held, not refused.
        var next = OpenThroughAsync(endpoint, timeoutSeconds: 60);
        (await ProxyServersFixture.EventuallyAsync(() => endpoint.Stats.Held == 1)).ShouldBeTrue();
        await endpoint.ResumeAsync(CancellationToken.None);
        await using var connection = await next;
        (await ScalarAsync<int>(connection, "SELECT 1")).ShouldBe(1);
    }

    [Fact]
    public async Task TransactionInFlightAtPause_CommitsThenDrainClosesTheConnection()
    {
        await servers.Blue.ExecuteAsync("DROP TABLE IF EXISTS app.drain_rows; CREATE TABLE app.drain_rows (id INT PRIMARY KEY)");
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        await using var connection = await OpenThroughAsync(endpoint);
        await using var idle = await OpenThroughAsync(endpoint);
        await using var transaction = await connection.BeginTransactionAsync();
        await ExecuteAsync(connection, "INSERT INTO drain_rows VALUES (1)");

        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var drain = endpoint.DrainAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        (await ProxyServersFixture.EventuallyAsync(() => endpoint.Stats.Active == 1)).ShouldBeTrue("the idle connection closes at once");
        await Task.Delay(500);
        drain.IsCompleted.ShouldBeFalse("the drain waits for the open transaction");
        await ExecuteAsync(connection, "INSERT INTO drain_rows VALUES (2)");
        await transaction.CommitAsync();
        var result = await drain.WaitAsync(TimeSpan.FromSeconds(10));

        result.ShouldBe(new EndpointDrainResult(2, 0));
        (await servers.Blue.ScalarAsync<long>("SELECT COUNT(*) FROM app.drain_rows")).ShouldBe(2);
        // The connection is gone: MySqlConnector reports it as a MySqlException or the socket's own error.
        await Should.ThrowAsync<Exception>(ScalarAsync<int>(connection, "SELECT 1"));
        await Should.ThrowAsync<Exception>(ScalarAsync<int>(idle, "SELECT 1"));
        endpoint.Stats.Active.ShouldBe(0);
    }

    [Fact]
    public async Task TransactionOpenPastTheBudget_IsCut_AndItsWritesRolledBack()
    {
        await servers.Blue.ExecuteAsync("DROP TABLE IF EXISTS app.cut_rows; CREATE TABLE app.cut_rows (id INT PRIMARY KEY)");
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        await using var connection = await OpenThroughAsync(endpoint);
        await using var transaction = await connection.BeginTransactionAsync();
        await ExecuteAsync(connection, "INSERT INTO cut_rows VALUES (1)");

        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var result = await endpoint.DrainAsync(TimeSpan.FromMilliseconds(500), CancellationToken.None);

        result.ShouldBe(new EndpointDrainResult(0, 1));
        (await ProxyServersFixture.EventuallyAsync(async () => await servers.Blue.ScalarAsync<long>("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app'") == 0))
            .ShouldBeTrue("the cut session ends on the server");
        (await servers.Blue.ScalarAsync<long>("SELECT COUNT(*) FROM app.cut_rows")).ShouldBe(0);
    }

    [Fact]
    public async Task Flip_MovesNewConnectionsToGreen_OldOnesStayUntilDrained()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        await using var before = await OpenThroughAsync(endpoint);

        await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);
        await using var after = await OpenThroughAsync(endpoint);

        (await ScalarAsync<int>(before, "SELECT @@port")).ShouldBe(servers.Blue.Port);
        (await ScalarAsync<int>(after, "SELECT @@port")).ShouldBe(servers.Green.Port);
    }

    [Fact]
    public async Task ClientKilled_ServerSessionEnds_AndActiveReturnsToZero()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        var start = new ProcessStartInfo("mariadb")
        {
            ArgumentList = { "--no-defaults", "--batch", "--unbuffered", "--skip-column-names", "-h", "127.0.0.1", "-P", endpoint.LocalEndPoint.Port.ToString(CultureInfo.InvariantCulture), "-u", AppUser, "-D", "app" },
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
        };
        start.Environment["MYSQL_PWD"] = AppPassword;
        using var client = Process.Start(start)!; // Start returns null only for shell-executed documents.
        await client.StandardInput.WriteLineAsync("SELECT CONNECTION_ID();");
        await client.StandardInput.FlushAsync();
        var id = long.Parse((await client.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30)))!, CultureInfo.InvariantCulture);
        endpoint.Stats.Active.ShouldBe(1);

        // SIGKILL: the socket closes without COM_QUIT, as when a client crashes.
        client.Kill();
        await client.WaitForExitAsync();

        (await ProxyServersFixture.EventuallyAsync(() => endpoint.Stats.Active == 0)).ShouldBeTrue();
        (await ProxyServersFixture.EventuallyAsync(async () => !await SessionExistsAsync(id))).ShouldBeTrue($"session {id} outlived its client");
    }

    [Fact]
    public async Task ClientClosesMidQuery_ServerSessionEnds()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        var connection = await OpenThroughAsync(endpoint);
        var id = await ScalarAsync<long>(connection, "SELECT CONNECTION_ID()");
        var sleeping = ScalarAsync<long>(connection, "SELECT SLEEP(60)");
        (await ProxyServersFixture.EventuallyAsync(async () => await servers.Blue.ScalarAsync<long>($"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {id} AND INFO LIKE 'SELECT SLEEP%'") == 1)).ShouldBeTrue();

        // Cutting the endpoint's side of the client abruptly, mid-query.
        endpoint.Stats.Active.ShouldBe(1);
        await endpoint.StopAsync();
        await Should.ThrowAsync<Exception>(sleeping);
        await connection.DisposeAsync();

        (await ProxyServersFixture.EventuallyAsync(async () => !await SessionExistsAsync(id), TimeSpan.FromSeconds(30))).ShouldBeTrue($"session {id} outlived its client");
    }

    [Fact]
    public async Task ServerKillsTheSession_ClientSeesTheConnectionEnd_AndActiveReturnsToZero()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        await using var connection = await OpenThroughAsync(endpoint);
        var id = await ScalarAsync<long>(connection, "SELECT CONNECTION_ID()");

        await servers.Blue.ExecuteAsync($"KILL CONNECTION {id}");

        (await ProxyServersFixture.EventuallyAsync(() => endpoint.Stats.Active == 0)).ShouldBeTrue();
        await Should.ThrowAsync<Exception>(ScalarAsync<int>(connection, "SELECT 1"));
    }

    [Fact]
    public async Task ClientAskingForTlsAnyway_GetsAnErrorPacket_NotRelayed()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, name: "orders");
        using var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endpoint.LocalEndPoint);
        var greeting = await ReadPacketAsync(socket);
        greeting[4].ShouldBe((byte)10, "protocol 10 greeting");

        // An SSLRequest: capabilities with CLIENT_SSL and CLIENT_PROTOCOL_41, max packet, collation, 23 zero bytes.
        var request = new byte[4 + 32];
        request[0] = 32;
        request[3] = 1;
        BitConverter.TryWriteBytes(request.AsSpan(4), 0x800u | 0x200u | 0x8u).ShouldBeTrue();
        await socket.SendAsync(request);
        var answer = await ReadPacketAsync(socket);

        answer[4].ShouldBe((byte)0xFF);
        BitConverter.ToUInt16(answer, 5).ShouldBe((ushort)1235);
        System.Text.Encoding.UTF8.GetString(answer, 13, answer.Length - 13).ShouldContain("Teal endpoint orders");
    }

    private async Task<bool> SessionExistsAsync(long id) =>
        await servers.Blue.ScalarAsync<long>($"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {id}") > 0;

    private static async Task<byte[]> ReadPacketAsync(Socket socket)
    {
        var header = new byte[4];
        await ReceiveExactlyAsync(socket, header);
        var packet = new byte[4 + (header[0] | header[1] << 8 | header[2] << 16)];
        header.CopyTo(packet, 0);
        await ReceiveExactlyAsync(socket, packet.AsMemory(4));
        return packet;
    }

    private static async Task ReceiveExactlyAsync(Socket socket, Memory<byte> buffer)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(15));
        while (buffer.Length > 0)
        {
            var read = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
            read.ShouldBeGreaterThan(0, "the endpoint closed the connection early");
            buffer = buffer[read..];
        }
    }
}
