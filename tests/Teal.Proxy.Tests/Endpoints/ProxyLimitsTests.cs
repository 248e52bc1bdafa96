using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Npgsql;
using Teal.Proxy.Endpoints;
using static Teal.Proxy.Tests.Endpoints.ProxyServersFixture;

namespace Teal.Proxy.Tests.Endpoints;

[Collection(ProxyServersGroup.Name)]
public sealed class ProxyLimitsTests(ProxyServersFixture servers)
{
    [Fact]
    public async Task OverTheCap_ClientGetsTooManyConnections_AndASlotFreedIsUsableAgain()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, name: "capped", options: new ProxyOptions { MaxConnections = 2 });
        var first = await OpenThroughAsync(endpoint, servers.Blue);
        await using var second = await OpenThroughAsync(endpoint, servers.Blue);

        var error = await Should.ThrowAsync<PostgresException>(OpenThroughAsync(endpoint, servers.Blue));

        error.SqlState.ShouldBe(PostgresErrorCodes.TooManyConnections);
        error.MessageText.ShouldBe("Teal endpoint capped has reached its limit of 2 connections");
        endpoint.Stats.Active.ShouldBe(2);
        NpgsqlConnection.ClearPool(first);
        await first.DisposeAsync();
        (await EventuallyAsync(() => endpoint.Stats.Active == 1)).ShouldBeTrue();
        await using var third = await OpenThroughAsync(endpoint, servers.Blue);
        (await ScalarAsync<int>(third, "select 1")).ShouldBe(1);
    }

    [Fact]
    public async Task HeldClientThatHangsUp_IsFreedBeforeTheResume()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, options: new ProxyOptions { MaxConnections = 1 });
        await endpoint.PauseAsync(TimeSpan.FromMinutes(1), CancellationToken.None);
        using (var client = new Socket(SocketType.Stream, ProtocolType.Tcp))
        {
            await client.ConnectAsync(endpoint.LocalEndPoint);
            await client.SendAsync(StartupPacket(AppUser, "postgres"));
            (await EventuallyAsync(() => endpoint.Stats.Held == 1)).ShouldBeTrue();
        }

        (await EventuallyAsync(() => endpoint.Stats.Held == 0)).ShouldBeTrue("the client hung up while held");
        endpoint.Stats.Active.ShouldBe(0);
        // Its slot under the cap is free again: the next client is held, not refused.
        var next = OpenThroughAsync(endpoint, servers.Blue);
        (await EventuallyAsync(() => endpoint.Stats.Held == 1)).ShouldBeTrue();
        await endpoint.ResumeAsync(CancellationToken.None);
        await using var connection = await next;
        (await ScalarAsync<int>(connection, "select 1")).ShouldBe(1);
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
}
