using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Threading.Tasks.Sources;
using Teal.Core.Endpoints;
using Teal.Proxy.Tls;

namespace Teal.Proxy.Endpoints;

/// <summary>
/// The proxy's own event loop for PostgreSQL connections: epoll threads that receive only when
/// the kernel has said a socket is readable. .NET's sockets try every receive before waiting
/// (a <c>recvfrom</c> that fails with EAGAIN on each forwarded chunk, then <c>epoll_wait</c>, then
/// the real <c>recvfrom</c>); measured here, that speculative receive and the extra wake-ups of two
/// socket threads were most of what the proxy spent per transaction beyond PgBouncer. Here a
/// receive that returned less than its buffer has drained the socket, so the next one waits for
/// the next edge without asking the kernel first: two syscalls per forwarded chunk, as PgBouncer.
/// A socket whose owner turns <see cref="EpollSocket.InlineCompletions"/> on (the forwarding
/// pumps, which never block) has its continuations run on the epoll thread that saw the event;
/// everything else (logins, an auth query, a session's move) continues on the thread pool, so a
/// blocking call there cannot stall the loop.
/// Linux on x86-64 only (the layout of <c>epoll_event</c> is packed there); elsewhere, or with
/// <c>TEAL_PROXY_EPOLL=0</c>, connections use .NET's sockets.
/// </summary>
internal static partial class EpollSockets
{
    /// <summary>The environment variable that turns the event loop off (0) for a process.</summary>
    public const string Variable = "TEAL_PROXY_EPOLL";

    /// <summary>
    /// Event-loop threads. Default: one per core (at most eight), as HAProxy's threads. A client's
    /// server socket joins its client's loop (<see cref="Attach"/>), so each session is one loop's
    /// and the loops share nothing per transaction. On two cores (bench/proxy/README.md) two loops
    /// so placed ran 5-16 % more transactions than PgBouncer in every scenario, where one loop ran
    /// at its level, for 2-13 % more CPU per transaction than PgBouncer's (fewer events per
    /// wake-up): one loop (TEAL_PROXY_EPOLL_THREADS=1) spends less CPU, two serve more.
    /// </summary>
    public const string ThreadsVariable = "TEAL_PROXY_EPOLL_THREADS";

    internal const int EAGAIN = 11;
    private const int EBADF = 9;
    private const int EINTR = 4;
    private const int EINPROGRESS = 115;
    private const int MSG_NOSIGNAL = 0x4000;
    private const int MSG_PEEK = 0x2;
    private const int EPOLL_CTL_ADD = 1;
    private const int EPOLL_CTL_DEL = 2;
    private const uint EPOLLIN = 0x1;
    private const uint EPOLLOUT = 0x4;
    private const uint EPOLLERR = 0x8;
    private const uint EPOLLHUP = 0x10;
    private const uint EPOLLRDHUP = 0x2000;
    private const uint EPOLLET = 1u << 31;

    private static readonly Lazy<Loop[]?> Loops = new(Start);
    private static readonly ConcurrentDictionary<long, EpollSocket> Registered = new();
    private static long _nextId;

    // Turns among the loops for sockets placed on no other's loop: counted apart from the ids,
    // which server sockets placed near their clients take too (with two loops and one id each way,
    // every client would land on the same loop).
    private static long _nextLoop;

    /// <summary>Whether the event loop serves this process.</summary>
    public static bool Enabled => Loops.Value is not null;

    /// <summary>How many event-loop threads run (0 when the loop is off).</summary>
    public static int LoopCount => Loops.Value?.Length ?? 0;

    /// <summary>
    /// Takes <paramref name="socket"/> over for the event loop; null when the loop is off (then use
    /// .NET's sockets). With <paramref name="near"/>, on that socket's loop: a server connection
    /// on its client's loop forwards a transaction's both ways on one thread, as PgBouncer's one
    /// thread does and HAProxy's threads do, instead of waking two threads for each exchange.
    /// </summary>
    public static EpollSocket? Attach(Socket socket, EpollSocket? near = null)
    {
        if (Loops.Value is not { } loops)
        {
            return null;
        }

        socket.Blocking = false;
        var id = Interlocked.Increment(ref _nextId);
        var fd = (int)socket.SafeHandle.DangerousGetHandle();
        var registration = new EpollSocket(socket, id, near?.LoopFd ?? loops[Interlocked.Increment(ref _nextLoop) % loops.Length].Fd, fd);
        Registered[id] = registration;
        var ev = new EpollEvent { Events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, Data = (ulong)id };
        if (EpollCtl(registration.LoopFd, EPOLL_CTL_ADD, fd, ref ev) != 0)
        {
            Registered.TryRemove(id, out _);
            throw Error(Marshal.GetLastPInvokeError());
        }

        return registration;
    }

    /// <summary>
    /// Connects a new socket, owned by the event loop, to <paramref name="target"/> within
    /// <paramref name="timeout"/>: the socket, or why not in words for the client's error.
    /// Connecting through .NET would register the socket with .NET's own epoll as well.
    /// </summary>
    public static async Task<(Socket? Socket, EpollSocket? Io, string? Failure)> ConnectAsync(EndpointTarget target, TimeSpan timeout, CancellationToken stopping, EpollSocket? near = null)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        deadline.CancelAfter(timeout);
        string failure = "no address";
        try
        {
            var addresses = IPAddress.TryParse(target.Host, out var literal) ? [literal] : await Dns.GetHostAddressesAsync(target.Host, deadline.Token);
            foreach (var address in addresses)
            {
                var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, Blocking = false };
                EpollSocket? io = null;
                try
                {
                    try
                    {
                        socket.Connect(new IPEndPoint(address, target.Port));
                        io = Attach(socket, near)!; // Only called when the loop runs.
                    }
                    catch (SocketException ex) when (ex.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress || ex.ErrorCode == EINPROGRESS)
                    {
                        // Registered only now that the connect is under way: registered before,
                        // the unconnected socket's own state (writable, hung up) would be an edge
                        // that the wait below could take for the connect's end.
                        io = Attach(socket, near)!;
                        await io.WaitWritableAsync(deadline.Token);
                        var error = (int)socket.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
                        if (error != 0)
                        {
                            throw new SocketException(error);
                        }
                    }

                    return (socket, io, null);
                }
                catch (SocketException ex)
                {
                    failure = ex.Message;
                    io?.Close();
                    socket.Dispose();
                }
                catch
                {
                    io?.Close();
                    socket.Dispose();
                    throw;
                }
            }

            return (null, null, failure);
        }
        catch (Exception ex) when ((ex is SocketException or OperationCanceledException) && !stopping.IsCancellationRequested)
        {
            return (null, null, ex is OperationCanceledException ? $"no answer within {timeout.TotalSeconds:0} s" : ex.Message);
        }
    }

    /// <summary>Leaves the loop; the descriptor must still be open (a closed one's number may be another socket's by now).</summary>
    internal static void Unregister(EpollSocket socket, int fd)
    {
        Registered.TryRemove(socket.Id, out _);
        var ev = default(EpollEvent);
        _ = EpollCtl(socket.LoopFd, EPOLL_CTL_DEL, fd, ref ev);
    }

    internal static int Receive(SafeHandle handle, Span<byte> buffer, bool peek, out int errno)
    {
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            while (true)
            {
                var read = Recv((int)handle.DangerousGetHandle(), ref MemoryMarshal.GetReference(buffer), (nuint)buffer.Length, peek ? MSG_PEEK : 0);
                errno = read < 0 ? Marshal.GetLastSystemError() : 0;
                if (errno != EINTR)
                {
                    return (int)read;
                }
            }
        }
        catch (ObjectDisposedException)
        {
            // Closed under a receive the loop was about to make.
            errno = EBADF;
            return -1;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    internal static int Send(SafeHandle handle, ReadOnlySpan<byte> data, out int errno)
    {
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            while (true)
            {
                var sent = SendNative((int)handle.DangerousGetHandle(), in MemoryMarshal.GetReference(data), (nuint)data.Length, MSG_NOSIGNAL);
                errno = sent < 0 ? Marshal.GetLastSystemError() : 0;
                if (errno != EINTR)
                {
                    return (int)sent;
                }
            }
        }
        catch (ObjectDisposedException)
        {
            errno = EBADF;
            return -1;
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    internal static bool WouldBlock(int errno) => errno == EAGAIN;

    /// <summary>
    /// The exception for a Linux errno from a call made here. SocketException's constructor takes
    /// .NET's SocketError, not an errno: given ECONNRESET (104) it made SocketError 104, a code
    /// .NET does not have, where logs and a client's error should say the connection was reset.
    /// </summary>
    internal static SocketException Error(int errno) => errno switch
    {
        EBADF => new SocketException((int)SocketError.OperationAborted),
        32 => new SocketException((int)SocketError.Shutdown), // EPIPE
        101 => new SocketException((int)SocketError.NetworkUnreachable),
        103 => new SocketException((int)SocketError.ConnectionAborted),
        104 => new SocketException((int)SocketError.ConnectionReset),
        107 => new SocketException((int)SocketError.NotConnected),
        110 => new SocketException((int)SocketError.TimedOut),
        111 => new SocketException((int)SocketError.ConnectionRefused),
        113 => new SocketException((int)SocketError.HostUnreachable),
        _ => new SocketException((int)SocketError.SocketError, $"socket error (errno {errno})"),
    };

    private static Loop[]? Start()
    {
        if (!OperatingSystem.IsLinux() || RuntimeInformation.ProcessArchitecture != Architecture.X64 || Environment.GetEnvironmentVariable(Variable) == "0")
        {
            return null;
        }

        var count = int.TryParse(Environment.GetEnvironmentVariable(ThreadsVariable), out var configured) && configured > 0
            ? configured
            : Math.Clamp(Environment.ProcessorCount, 1, 8);
        var loops = new Loop[count];
        for (var i = 0; i < count; i++)
        {
            var fd = EpollCreate1(0x80000); // EPOLL_CLOEXEC
            if (fd < 0)
            {
                return null;
            }

            loops[i] = new Loop(fd);
            var thread = new Thread(loops[i].Run) { IsBackground = true, Name = $"Teal epoll {i}" };
            thread.UnsafeStart();
        }

        return loops;
    }

    private sealed class Loop(int fd)
    {
        public int Fd { get; } = fd;

        public void Run()
        {
            var events = new EpollEvent[256];
            while (true)
            {
                var count = EpollWait(Fd, ref events[0], events.Length, -1);
                if (count > 0)
                {
                    Dispatch(events, count);
                }

                // else EINTR
            }
        }

        // Apart from Run so that it is compiled as a method called often: a method that never
        // returns runs the on-stack-replacement build of its loop, optimized less.
        private static void Dispatch(EpollEvent[] events, int count)
        {
            for (var i = 0; i < count; i++)
            {
                if (!Registered.TryGetValue((long)events[i].Data, out var socket))
                {
                    continue; // Closed since.
                }

                var mask = events[i].Events;
                try
                {
                    socket.OnEvent(
                        readable: (mask & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0,
                        writable: (mask & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0,
                        peerDone: (mask & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0);
                }
#pragma warning disable CA1031 // The loop serves every connection of its share: one failing must not stop the others.
                catch (Exception)
#pragma warning restore CA1031
                {
                    socket.Close();
                }
            }
        }
    }

    [StructLayout(LayoutKind.Sequential, Pack = 4)]
    private struct EpollEvent
    {
        public uint Events;
        public ulong Data;
    }

    [LibraryImport("libc", EntryPoint = "epoll_create1", SetLastError = true)]
    private static partial int EpollCreate1(int flags);

    [LibraryImport("libc", EntryPoint = "epoll_ctl", SetLastError = true)]
    private static partial int EpollCtl(int epfd, int op, int fd, ref EpollEvent ev);

    [LibraryImport("libc", EntryPoint = "epoll_wait", SetLastError = true)]
    private static partial int EpollWait(int epfd, ref EpollEvent events, int maxEvents, int timeout);

    // recv and send on these non-blocking sockets return at once (a few microseconds of the
    // kernel's TCP path), so they are called without the GC transition (SuppressGCTransition):
    // with it, the transition's frame and thread-local bookkeeping were about a sixth of the
    // proxy's user-space samples under pgbench -S (perf). Nothing runs between the call and the
    // errno read after it, so the error needs no SetLastError copy either. A GC waits for the
    // call to return, no longer than for the loop's own code around it.
    [LibraryImport("libc", EntryPoint = "recv")]
    [SuppressGCTransition]
    private static partial nint Recv(int fd, ref byte buffer, nuint length, int flags);

    [LibraryImport("libc", EntryPoint = "send")]
    [SuppressGCTransition]
    private static partial nint SendNative(int fd, in byte buffer, nuint length, int flags);
}

/// <summary>
/// One socket on the event loop: one receive and one send at a time (sends queue on a gate),
/// each completing at once when the socket is ready or when its edge arrives.
/// </summary>
[System.Diagnostics.CodeAnalysis.SuppressMessage("Reliability", "CA1001", Justification = "The send gate is never asked for a wait handle, so it holds nothing to release; the socket's owner ends it with Close")]
internal sealed class EpollSocket
{
    private readonly Socket _socket;
    private readonly Lock _lock = new();
    private readonly SemaphoreSlim _sendGate = new(1, 1);
    private readonly Waiter _receiver = new();
    private readonly Waiter _writer = new();

    // Under _lock. Readable starts true: data may have arrived before the registration.
    private bool _readable = true;

    // A writable edge no one waited for: the next wait returns at once (at worst a send retried once).
    private bool _writable;

    // The peer closed its side (or the connection failed): no edge comes after the one that said
    // so, which may also have carried the peer's last data. From then on every receive asks the
    // kernel, which returns what is left, then 0 (or the error).
    private bool _peerDone;
    private bool _closed;

    // The receive parked until the next edge.
    private Memory<byte> _pendingBuffer;
    private bool _pendingPeek;
    private bool _receiving;
    private bool _waitingToWrite;

    private readonly int _fd;
    private bool _inline;

    // The TLS once StartTlsAsync is done: from then on OpenSSL reads and writes the socket.
    private OpenSslSession? _tls;

    internal EpollSocket(Socket socket, long id, int loopFd, int fd)
    {
        _socket = socket;
        Id = id;
        LoopFd = loopFd;
        _fd = fd;
    }

    internal long Id { get; }

    /// <summary>Run continuations on the epoll thread (code that never blocks); else on the thread pool.</summary>
    public bool InlineCompletions
    {
        get => Volatile.Read(ref _inline);
        set => Volatile.Write(ref _inline, value);
    }

    internal int LoopFd { get; }

    /// <summary>A stream over this socket, for TLS on top of it.</summary>
    public Stream AsStream() => new EpollStream(this);

    /// <summary>Whether receives and sends go through TLS (<see cref="StartTlsAsync"/>).</summary>
    public bool Encrypted => Volatile.Read(ref _tls) is not null;

    /// <summary>Whether this socket's TLS agreed on ALPN "postgresql" with the client.</summary>
    public bool AgreedPostgresAlpn => Volatile.Read(ref _tls)?.AgreedAlpn ?? false;

    /// <summary>
    /// A TLS handshake on this socket, on <paramref name="context"/>'s side (the server's, with
    /// its certificate, or a client's); then every receive and send goes through OpenSSL on it.
    /// </summary>
    public async Task StartTlsAsync(OpenSslContext context, CancellationToken cancellationToken)
    {
        var session = context.NewSession(_fd);
        try
        {
            var probe = new byte[1];
            while (true)
            {
                switch (session.Handshake())
                {
                    case TlsWait.None:
                        lock (_lock)
                        {
                            ObjectDisposedException.ThrowIf(_closed, _socket);
                            _tls = session;

                            // OpenSSL may have read the peer's first bytes with its last handshake
                            // message: no edge comes for them.
                            _readable = true;
                        }

                        return;
                    case TlsWait.Readable:
                        if (await PeekAsync(probe, cancellationToken) == 0)
                        {
                            throw new IOException("the peer closed the connection during the TLS handshake");
                        }

                        break;
                    default:
                        await WaitWritableAsync(cancellationToken);
                        break;
                }
            }
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    /// <summary>Receives into <paramref name="buffer"/>: 0 at the peer's end of stream.</summary>
    public ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => ReceiveAsync(buffer, peek: false, cancellationToken);

    /// <summary>Waits for data (or the end of the stream) and looks at it without taking it.</summary>
    public ValueTask<int> PeekAsync(Memory<byte> buffer, CancellationToken cancellationToken) => ReceiveAsync(buffer, peek: true, cancellationToken);

    private ValueTask<int> ReceiveAsync(Memory<byte> buffer, bool peek, CancellationToken cancellationToken)
    {
        while (true)
        {
            lock (_lock)
            {
                ObjectDisposedException.ThrowIf(_closed, _socket);
                if (!_readable)
                {
                    _pendingBuffer = buffer;
                    _pendingPeek = peek;
                    _receiving = true;
                    return _receiver.Park(this, cancellationToken);
                }

                _readable = false;
            }

            int read, errno;
            bool more;
            try
            {
                read = ReceiveNow(buffer.Span, peek, out errno, out more);
            }
            catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
            {
                return ValueTask.FromException<int>(ex); // A TLS receive that failed.
            }

            if (read >= 0)
            {
                if (read == 0 || read == buffer.Length || peek || more || Volatile.Read(ref _peerDone))
                {
                    // Maybe more behind it, a peek that left it there, or the end of the stream
                    // or the peer's close seen (no edge will come again): the next receive asks at once.
                    MarkReadable();
                }

                return new ValueTask<int>(read);
            }

            if (errno == WantsWrite)
            {
                lock (_lock)
                {
                    _pendingBuffer = buffer;
                    _pendingPeek = peek;
                    _receiving = true;
                    var parked = _receiver.Park(this, cancellationToken);
                    RetryReceiveSoon();
                    return parked;
                }
            }

            if (!EpollSockets.WouldBlock(errno))
            {
                return ValueTask.FromException<int>(EpollSockets.Error(errno));
            }

            // EAGAIN: an edge for data already taken. Loop: either a new edge came meanwhile
            // (readable again) or the receive parks.
        }
    }

    /// <summary>
    /// Sends all of <paramref name="data"/>, one send at a time per socket. A send the socket
    /// takes at once (nearly every one a proxy makes) completes synchronously, without an async
    /// state machine: that machinery was a large share of the proxy's own CPU per chunk.
    /// </summary>
    public ValueTask SendAllAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        if (!_sendGate.Wait(0, CancellationToken.None))
        {
            return SendAllLaterAsync(data, gateHeld: false, cancellationToken);
        }

        bool done;
        try
        {
            done = TrySendAll(ref data);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException or IOException)
        {
            // IOException: a TLS send that failed. The turn goes back either way, or every later
            // send (the error a closing connection sends its client) would wait for it forever.
            _sendGate.Release();
            return ValueTask.FromException(ex);
        }

        if (!done)
        {
            return SendAllLaterAsync(data, gateHeld: true, cancellationToken);
        }

        _sendGate.Release();
        return default;
    }

    private async ValueTask SendAllLaterAsync(ReadOnlyMemory<byte> data, bool gateHeld, CancellationToken cancellationToken)
    {
        if (!gateHeld)
        {
            await _sendGate.WaitAsync(cancellationToken);
        }

        try
        {
            while (!TrySendAll(ref data))
            {
                await WaitWritableAsync(cancellationToken);
            }
        }
        finally
        {
            _sendGate.Release();
        }
    }

    /// <summary>Sends what the socket takes now: true when all is sent, false when it would block.</summary>
    private bool TrySendAll(ref ReadOnlyMemory<byte> data)
    {
        while (data.Length > 0)
        {
            int sent, errno;
            if (Volatile.Read(ref _tls) is { } tls)
            {
                sent = tls.Write(data.Span, out var wait);
                errno = wait == TlsWait.Readable
                    ? throw new IOException("TLS: the peer asked for a renegotiation, which Teal's proxy does not do")
                    : sent < 0 ? EpollSockets.EAGAIN : 0;
            }
            else
            {
                sent = EpollSockets.Send(_socket.SafeHandle, data.Span, out errno);
            }

            if (sent >= 0)
            {
                data = data[sent..];
                continue;
            }

            if (!EpollSockets.WouldBlock(errno))
            {
                throw EpollSockets.Error(errno);
            }

            return false;
        }

        return true;
    }

    /// <summary>Waits for the socket's next writable edge (a full send buffer drained, or a connect done).</summary>
    public ValueTask<int> WaitWritableAsync(CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_closed, _socket);
            if (_writable)
            {
                _writable = false;
                return new ValueTask<int>(0);
            }

            _waitingToWrite = true;
            return _writer.Park(this, cancellationToken);
        }
    }

    // The TLS close_notify goes out only while the descriptor is still this socket's: once the
    // socket is disposed, its number may belong to another connection already.
    private void ShutDownTls(OpenSslSession tls)
    {
        var added = false;
        try
        {
            _socket.SafeHandle.DangerousAddRef(ref added);
            tls.Shutdown();
        }
        catch (ObjectDisposedException)
        {
            // Closed already: no alert.
        }
        finally
        {
            if (added)
            {
                _socket.SafeHandle.DangerousRelease();
            }
        }
    }

    /// <summary>Leaves the event loop and fails what waits; the owner disposes the socket after.</summary>
    public void Close()
    {
        bool receiving, writing;
        lock (_lock)
        {
            if (_closed)
            {
                return;
            }

            _closed = true;
            if (_tls is { } tls)
            {
                ShutDownTls(tls);
                tls.Dispose(); // Before the owner closes the descriptor, which OpenSSL would use.
            }
            receiving = _receiving;
            writing = _waitingToWrite;
            _receiving = false;
            _waitingToWrite = false;
            _pendingBuffer = default;
        }

        var added = false;
        try
        {
            _socket.SafeHandle.DangerousAddRef(ref added);
            EpollSockets.Unregister(this, _fd);
        }
        catch (ObjectDisposedException)
        {
            // Disposed already: closing the descriptor left the epoll set by itself.
            EpollSockets.Unregister(this, fd: -1);
        }
        finally
        {
            if (added)
            {
                _socket.SafeHandle.DangerousRelease();
            }
        }

        var aborted = new SocketException((int)SocketError.OperationAborted);
        if (receiving)
        {
            _receiver.FailLater(aborted);
        }

        if (writing)
        {
            _writer.FailLater(aborted);
        }
    }

    internal void OnEvent(bool readable, bool writable, bool peerDone)
    {
        if (peerDone)
        {
            Volatile.Write(ref _peerDone, true);
        }

        if (readable)
        {
            OnReadable();
        }

        // EPOLLOUT comes with nearly every edge of a socket registered for both; once marked
        // writable with no send waiting (a parked send implies not marked), there is nothing to do.
        if (writable && !Volatile.Read(ref _writable))
        {
            var wake = false;
            lock (_lock)
            {
                if (_waitingToWrite)
                {
                    _waitingToWrite = false;
                    wake = true;
                }
                else
                {
                    _writable = true;
                }
            }

            if (wake)
            {
                _writer.Complete(0);
            }
        }
    }

    private void OnReadable()
    {
        Memory<byte> buffer;
        bool peek;
        lock (_lock)
        {
            if (!_receiving)
            {
                _readable = true;
                return;
            }

            _receiving = false;
            buffer = _pendingBuffer;
            peek = _pendingPeek;
            _pendingBuffer = default;
        }

        while (true)
        {
            int read, errno;
            bool more;
            try
            {
                read = ReceiveNow(buffer.Span, peek, out errno, out more);
            }
            catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
            {
                // A TLS receive that failed (a record that does not decrypt, a reset): the parked
                // receive is this one, taken above, so it fails here, or no one would end it.
                _receiver.Fail(ex);
                return;
            }

            if (read >= 0)
            {
                if (read == 0 || read == buffer.Length || peek || more || Volatile.Read(ref _peerDone))
                {
                    MarkReadable();
                }

                _receiver.Complete(read);
                return;
            }

            if (errno == WantsWrite)
            {
                lock (_lock)
                {
                    _pendingBuffer = buffer;
                    _pendingPeek = peek;
                    _receiving = true;
                }

                RetryReceiveSoon();
                return;
            }

            if (!EpollSockets.WouldBlock(errno))
            {
                _receiver.Fail(EpollSockets.Error(errno));
                return;
            }

            lock (_lock)
            {
                if (_closed)
                {
                    // Closed while this receive was in flight here, so Close did not see it parked.
                    _receiver.FailLater(new SocketException((int)SocketError.OperationAborted));
                    return;
                }

                if (!_readable)
                {
                    // Spurious edge: park again for the next one.
                    _pendingBuffer = buffer;
                    _pendingPeek = peek;
                    _receiving = true;
                    return;
                }

                _readable = false;
            }
        }
    }

    // ReceiveNow's errno when OpenSSL must send before it can read on (a TLS 1.3 key update
    // answered while the socket's send buffer is full).
    private const int WantsWrite = -1;

    /// <summary>
    /// One receive: plain, or decrypted through the socket's TLS. A TLS receive sets
    /// <paramref name="more"/> when bytes may wait in OpenSSL or in the kernel with no edge to
    /// come for them: the next receive then asks at once.
    /// </summary>
    private int ReceiveNow(Span<byte> buffer, bool peek, out int errno, out bool more)
    {
        more = false;
        if (peek || Volatile.Read(ref _tls) is not { } tls)
        {
            // A peek looks at the socket itself: the hang-up watch only wants to know that
            // something (or the end) came.
            return EpollSockets.Receive(_socket.SafeHandle, buffer, peek, out errno);
        }

        var read = tls.Read(buffer, out var wait, out more);
        errno = wait switch { TlsWait.Readable => EpollSockets.EAGAIN, TlsWait.Writable => WantsWrite, _ => 0 };
        return read;
    }

    // Rare enough not to track the socket's writable edges for it: the receive is tried again in
    // a millisecond, until OpenSSL has sent.
    private void RetryReceiveSoon() =>
        _ = Task.Delay(1).ContinueWith(static (_, state) => ((EpollSocket)state!).OnReadable(), this, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);

    private void MarkReadable()
    {
        lock (_lock)
        {
            _readable = true;
        }
    }

    private void Cancel(Waiter waiter, CancellationToken cancellationToken)
    {
        lock (_lock)
        {
            if (waiter == _receiver)
            {
                if (!_receiving)
                {
                    return;
                }

                _receiving = false;
                _pendingBuffer = default;
            }
            else
            {
                if (!_waitingToWrite)
                {
                    return;
                }

                _waitingToWrite = false;
            }
        }

        waiter.FailLater(new OperationCanceledException(cancellationToken));
    }

    /// <summary>
    /// One parked operation at a time, completed inline on the epoll thread (its continuation
    /// runs there), or from the thread pool when a close or a cancellation fails it.
    /// </summary>
    private sealed class Waiter : IValueTaskSource<int>
    {
        private ManualResetValueTaskSourceCore<int> _core;
        private CancellationTokenRegistration _cancellation;

        /// <summary>Called under the socket's lock.</summary>
        public ValueTask<int> Park(EpollSocket owner, CancellationToken cancellationToken)
        {
            _core.Reset();
            _core.RunContinuationsAsynchronously = !owner.InlineCompletions;
            var version = _core.Version;
            _cancellation = cancellationToken.CanBeCanceled
                ? cancellationToken.UnsafeRegister(static (state, token) =>
                {
                    var (socket, waiter) = ((EpollSocket, Waiter))state!;
                    socket.Cancel(waiter, token);
                }, (owner, this))
                : default;
            return new ValueTask<int>(this, version);
        }

        public void Complete(int result)
        {
            _cancellation.Dispose();
            _core.SetResult(result);
        }

        public void Fail(Exception error)
        {
            _cancellation.Dispose();
            _core.SetException(error);
        }

        public void FailLater(Exception error) =>
            ThreadPool.UnsafeQueueUserWorkItem(static state => state.Waiter.Fail(state.Error), (Waiter: this, Error: error), preferLocal: false);

        public int GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);
    }

    /// <summary>The socket as a stream, for SslStream.</summary>
    private sealed class EpollStream(EpollSocket socket) : Stream
    {
        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => socket.ReceiveAsync(buffer, cancellationToken);

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            socket.ReceiveAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) => socket.SendAllAsync(buffer, cancellationToken);

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            socket.SendAllAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException("the proxy reads asynchronously");

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException("the proxy writes asynchronously");

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();
    }
}
