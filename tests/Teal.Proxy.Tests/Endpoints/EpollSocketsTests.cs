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
    public async Task Connect_NearAClientSocket_JoinsItsLoop_WhileClientsTakeTheLoopsInTurn()
    {
        // proxy.runsettings runs two loops, as production does on a two-core machine.
        EpollSockets.LoopCount.ShouldBeGreaterThanOrEqualTo(2);
        var pairs = new List<(Socket A, EpollSocket AIo, Socket B, EpollSocket BIo)>();
        var servers = new List<(Socket Socket, EpollSocket Io)>();
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen();
        var target = new EndpointTarget("server", "127.0.0.1", ((IPEndPoint)listener.LocalEndPoint!).Port, "postgres");
        try
        {
            // Each "client" (an accepted socket, as the proxy's clients are) gets a server
            // connection near it, as ProxyConnection makes one: its id right after the client's.
            for (var i = 0; i < 8; i++)
            {
                var pair = await PairAsync();
                pairs.Add(pair);
                var accepting = listener.AcceptAsync();
                var (socket, io, failure) = await EpollSockets.ConnectAsync(target, TimeSpan.FromSeconds(30), CancellationToken.None, near: pair.BIo);
                failure.ShouldBeNull();
                servers.Add((socket!, io!));
                (await accepting).Dispose();

                io!.LoopFd.ShouldBe(pair.BIo.LoopFd);
            }

            // Sockets placed near nothing still take every loop in turn.
            pairs.SelectMany(p => new[] { p.AIo.LoopFd, p.BIo.LoopFd }).Distinct().Count().ShouldBe(EpollSockets.LoopCount);
        }
        finally
        {
            foreach (var (socket, io) in servers)
            {
                io.Close();
                socket.Dispose();
            }

            foreach (var (a, aIo, b, bIo) in pairs)
            {
                Dispose(a, aIo, b, bIo);
            }
        }
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

            var received = await ReceiveExactlyAsync(bIo, data.Length);

            await sending.WaitAsync(TimeSpan.FromSeconds(60));
            received.SequenceEqual(data).ShouldBeTrue();
        }
        finally
        {
            Dispose(a, aIo, b, bIo);
        }
    }

    [Fact]
    public async Task Send_WhileAnotherWaitsForTheBuffer_GoesAfterIt_Whole()
    {
        var (a, aIo, b, bIo) = await PairAsync();
        try
        {
            var first = RandomNumberGenerator.GetBytes(8 << 20);
            var second = RandomNumberGenerator.GetBytes(64 << 10);

            // The first send fills the buffers and parks holding the socket's send turn; the
            // second, which would go out at once on an idle socket, must wait for its turn.
            var sendingFirst = aIo.SendAllAsync(first).AsTask();
            await Task.Delay(200);
            var sendingSecond = aIo.SendAllAsync(second).AsTask();
            await Task.Delay(100);
            sendingSecond.IsCompleted.ShouldBeFalse();

            var received = await ReceiveExactlyAsync(bIo, first.Length + second.Length);

            await Task.WhenAll(sendingFirst, sendingSecond).WaitAsync(TimeSpan.FromSeconds(60));
            received.AsSpan(0, first.Length).SequenceEqual(first).ShouldBeTrue();
            received.AsSpan(first.Length).SequenceEqual(second).ShouldBeTrue();
        }
        finally
        {
            Dispose(a, aIo, b, bIo);
        }
    }

    [Fact]
    public async Task Send_ToAPeerThatReset_FailsItsTaskWithThePeersError_NotTheCall()
    {
        var (a, aIo, b, bIo) = await PairAsync();
        try
        {
            // An abortive close: the next send meets a reset connection (ECONNRESET, then EPIPE).
            b.LingerState = new LingerOption(true, 0);
            bIo.Close();
            b.Dispose();
            await Task.Delay(100);

            SocketException? failure = null;
            for (var i = 0; i < 100 && failure is null; i++)
            {
                // Outside the try: the call never throws itself, the failure is its task's (callers
                // that keep the task, as SslStream does, rely on that).
                var sending = aIo.SendAllAsync(new byte[1024]);
                try
                {
                    await sending;
                }
                catch (SocketException ex)
                {
                    failure = ex;
                }

                await Task.Delay(10);
            }

            failure.ShouldNotBeNull();
            // The error is the send's own (read straight from errno after the call).
            failure.SocketErrorCode.ShouldBeOneOf(SocketError.ConnectionReset, SocketError.Shutdown);

            // The send turn was given back: the next send fails the same way instead of hanging.
            await Should.ThrowAsync<SocketException>(aIo.SendAllAsync(new byte[16]).AsTask().WaitAsync(TimeSpan.FromSeconds(30)));
        }
        finally
        {
            aIo.Close();
            a.Dispose();
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
    public async Task Receive_DataAndThePeersCloseInOneEdge_EndsWithZeroAfterTheData()
    {
        // A server that answers and closes at once (an ErrorResponse, then its end: what
        // pg_terminate_backend does) can have both arrive before the loop thread takes the
        // socket's edge; then one edge carries both, and the receive after the data must still
        // ask the kernel, since no edge comes again. Seen in a loaded suite: a proxied
        // connection whose server had ended stayed open. The loop is held here by a
        // continuation that runs on it, so that the two arrive in one edge.
        var (a, aIo, b, bIo) = await PairAsync();
        var (s1, s1Io, s2, s2Io) = await PairAsync();
        while (s2Io.LoopFd != bIo.LoopFd)
        {
            Dispose(s1, s1Io, s2, s2Io);
            (s1, s1Io, s2, s2Io) = await PairAsync();
        }

        try
        {
            var buffer = new byte[64];
            var first = bIo.ReceiveAsync(buffer, CancellationToken.None).AsTask();

            // Hold the loop thread for 400 ms, from the moment s2's byte arrives.
            s2Io.InlineCompletions = true;
            var holding = new TaskCompletionSource();
            var held = s2Io.ReceiveAsync(new byte[1], CancellationToken.None).AsTask().ContinueWith(
                _ =>
                {
                    holding.SetResult();
                    Thread.Sleep(400);
                },
                CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default);
            await s1Io.SendAllAsync(new byte[] { 1 });
            await holding.Task.WaitAsync(TimeSpan.FromSeconds(30));

            // The answer and the close, while the loop is held.
            await a.SendAsync("hello"u8.ToArray());
            a.Shutdown(SocketShutdown.Send);

            (await first.WaitAsync(TimeSpan.FromSeconds(30))).ShouldBe(5);
            await held;
            var end = bIo.ReceiveAsync(buffer, CancellationToken.None).AsTask();
            (await Task.WhenAny(end, Task.Delay(TimeSpan.FromSeconds(5)))).ShouldBe(end, "the receive after the data waited for an edge that never comes");
            (await end).ShouldBe(0);
        }
        finally
        {
            Dispose(a, aIo, b, bIo);
            Dispose(s1, s1Io, s2, s2Io);
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
        failure.ShouldNotBeNull().ShouldContain("refused", Case.Insensitive); // The client's error says what happened.
    }

    private static async Task<byte[]> ReceiveExactlyAsync(EpollSocket io, int length)
    {
        var received = new byte[length];
        var at = 0;
        while (at < received.Length)
        {
            var read = await io.ReceiveAsync(received.AsMemory(at), CancellationToken.None);
            read.ShouldBeGreaterThan(0);
            at += read;
        }

        return received;
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
