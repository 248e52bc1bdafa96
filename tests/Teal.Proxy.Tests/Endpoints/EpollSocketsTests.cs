using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;

namespace Teal.Proxy.Tests.Endpoints;

/// <summary>The proxy's event loop on its own: what the proxy tests through a server do not force (full send buffers, a close or a cancel under a parked receive).</summary>
public sealed class EpollSocketsTests
{
    [Fact]
    public void TestProcess_RunsTheEventLoop()
    {
        // Guards the suite: every proxy test must go through the loop production uses.
        EpollSockets.Enabled.ShouldBeTrue();
    }

    [Fact]
    public async Task Send_MoreThanTheSocketBuffersHold_ArrivesWholeOnceTheReaderCatchesUp()
    {
        var (a, aIo, b, bIo) = await PairAsync();
        try
        {
            var data = RandomNumberGenerator.GetBytes(16 << 20);

            // The reader starts late: the sender fills both socket buffers and must wait for writable edges.
            var sending = aIo.SendAllAsync(data).AsTask();
            await Task.Delay(300);
            sending.IsCompleted.ShouldBeFalse();

            var received = new byte[data.Length];
            var at = 0;
            while (at < received.Length)
            {
                var read = await bIo.ReceiveAsync(received.AsMemory(at), CancellationToken.None);
                read.ShouldBeGreaterThan(0);
                at += read;
            }

            await sending.WaitAsync(TimeSpan.FromSeconds(60));
            received.SequenceEqual(data).ShouldBeTrue();
        }
        finally
        {
            Dispose(a, aIo, b, bIo);
        }
    }

    [Fact]
    public async Task Receive_Parked_EndsWithZeroAtThePeersClose_AndPeekLeavesTheData()
    {
        var (a, aIo, b, bIo) = await PairAsync();
        try
        {
            var buffer = new byte[8];
            var parked = bIo.PeekAsync(buffer, CancellationToken.None).AsTask();
            await Task.Delay(100);
            parked.IsCompleted.ShouldBeFalse();

            await aIo.SendAllAsync("hello"u8.ToArray());
            (await parked.WaitAsync(TimeSpan.FromSeconds(30))).ShouldBe(5);
            (await bIo.ReceiveAsync(buffer, CancellationToken.None).AsTask().WaitAsync(TimeSpan.FromSeconds(30))).ShouldBe(5);
            buffer.AsSpan(0, 5).SequenceEqual("hello"u8).ShouldBeTrue();

            var end = bIo.ReceiveAsync(buffer, CancellationToken.None).AsTask();
            a.Shutdown(SocketShutdown.Send);
            (await end.WaitAsync(TimeSpan.FromSeconds(30))).ShouldBe(0);
        }
        finally
        {
            Dispose(a, aIo, b, bIo);
        }
    }

    [Fact]
    public async Task Receive_Parked_FailsWhenCancelled_AndWhenClosed()
    {
        var (a, aIo, b, bIo) = await PairAsync();
        try
        {
            using var cancel = new CancellationTokenSource();
            var buffer = new byte[8];
            var cancelled = bIo.ReceiveAsync(buffer, cancel.Token).AsTask();
            await cancel.CancelAsync();
            await Should.ThrowAsync<OperationCanceledException>(cancelled.WaitAsync(TimeSpan.FromSeconds(30)));

            var closed = bIo.ReceiveAsync(buffer, CancellationToken.None).AsTask();
            bIo.Close();
            (await Should.ThrowAsync<SocketException>(closed.WaitAsync(TimeSpan.FromSeconds(30)))).SocketErrorCode.ShouldBe(SocketError.OperationAborted);
        }
        finally
        {
            Dispose(a, aIo, b, bIo);
        }
    }

    [Fact]
    public async Task Connect_ToAPortNobodyListensOn_SaysWhy()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        listener.Dispose();

        var (socket, io, failure) = await EpollSockets.ConnectAsync(new EndpointTarget("gone", "127.0.0.1", port, "postgres"), TimeSpan.FromSeconds(10), CancellationToken.None);

        socket.ShouldBeNull();
        io.ShouldBeNull();
        failure.ShouldNotBeNullOrEmpty();
    }

    private static async Task<(Socket A, EpollSocket AIo, Socket B, EpollSocket BIo)> PairAsync()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var target = new EndpointTarget("pair", "127.0.0.1", ((IPEndPoint)listener.LocalEndPoint!).Port, "postgres");
        var accepting = listener.AcceptAsync();
        var (a, aIo, failure) = await EpollSockets.ConnectAsync(target, TimeSpan.FromSeconds(30), CancellationToken.None);
        failure.ShouldBeNull();
        var b = await accepting;
        var bIo = EpollSockets.Attach(b)!;
        return (a!, aIo!, b, bIo);
    }

    private static void Dispose(Socket a, EpollSocket aIo, Socket b, EpollSocket bIo)
    {
        aIo.Close();
        a.Dispose();
        bIo.Close();
        b.Dispose();
    }
}
