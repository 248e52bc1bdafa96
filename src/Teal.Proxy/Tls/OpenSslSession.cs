using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Teal.Proxy.Endpoints;

namespace Teal.Proxy.Tls;

/// <summary>What an OpenSSL call needs before it can go on.</summary>
internal enum TlsWait
{
    None,
    Readable,
    Writable,
}

/// <summary>
/// One connection's TLS (a client's, or the proxy's own to a server), OpenSSL reading and writing
/// its (non-blocking) socket. Every call holds the session's lock: a connection's receive and its
/// sends can run on two event loops, and one OpenSSL session must not be used by two threads at
/// once. Freed by <see cref="Dispose"/>, after which every call fails as a closed socket does.
/// </summary>
internal sealed class OpenSslSession : IDisposable
{
    private readonly Lock _lock = new();
    private nint _ssl;

    // The peer's end was read (its close_notify, or a close without one), or a call failed as
    // OpenSSL allows no shutdown after: no close_notify goes out then.
    private bool _over;

    // Whether the socket read OpenSSL made last on this thread took all it asked for: then the
    // kernel may hold more, and no edge will come for it.
    [ThreadStatic]
    private static bool _lastReadFilled;

    internal OpenSslSession(nint ssl) => _ssl = ssl;

    /// <summary>Has <see cref="OnSocketBio"/> see the socket reads OpenSSL makes for <paramref name="ssl"/>.</summary>
    internal static unsafe void WatchReads(nint ssl) => OpenSsl.BIO_set_callback_ex(OpenSsl.SSL_get_rbio(ssl), &OnSocketBio);

    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe nint OnSocketBio(nint bio, int operation, nint data, nuint length, int argi, nint argl, int result, nuint* processed)
    {
        if (operation == (OpenSsl.BioCallbackRead | OpenSsl.BioCallbackReturn))
        {
            _lastReadFilled = result > 0 && processed is not null && *processed == length;
        }

        return result;
    }

    /// <summary>One step of the handshake (the side the context set): <see cref="TlsWait.None"/> once it is done.</summary>
    public TlsWait Handshake()
    {
        lock (_lock)
        {
            var ssl = Live();
            OpenSsl.ERR_clear_error();
            var result = OpenSsl.SSL_do_handshake(ssl);
            return result == 1 ? TlsWait.None : Wait(ssl, result, "handshake", out _);
        }
    }

    /// <summary>
    /// Decrypted bytes into <paramref name="buffer"/>: their count, 0 at the end of the stream, or
    /// -1 with what to wait for. <paramref name="more"/>: OpenSSL holds bytes it has read already,
    /// or its last read of the socket took all it asked for — no edge will come for what is left.
    /// </summary>
    public int Read(Span<byte> buffer, out TlsWait wait, out bool more)
    {
        lock (_lock)
        {
            var ssl = Live();
            OpenSsl.ERR_clear_error();
            _lastReadFilled = false;
            var result = OpenSsl.SSL_read(ssl, ref MemoryMarshal.GetReference(buffer), buffer.Length);
            if (result > 0)
            {
                wait = TlsWait.None;
                more = _lastReadFilled || OpenSsl.SSL_has_pending(ssl) == 1;
                return result;
            }

            more = false;
            wait = Wait(ssl, result, "read", out var ended);
            return ended ? 0 : -1;
        }
    }

    /// <summary>Encrypts and sends what the socket takes of <paramref name="data"/>: the bytes taken, or -1 with what to wait for.</summary>
    public int Write(ReadOnlySpan<byte> data, out TlsWait wait)
    {
        lock (_lock)
        {
            var ssl = Live();
            OpenSsl.ERR_clear_error();
            var result = OpenSsl.SSL_write(ssl, in MemoryMarshal.GetReference(data), data.Length);
            if (result > 0)
            {
                wait = TlsWait.None;
                return result;
            }

            wait = Wait(ssl, result, "write", out var ended);
            if (ended)
            {
                throw new IOException("TLS: the peer closed the connection");
            }

            return -1;
        }
    }

    /// <summary>Whether the handshake agreed on ALPN "postgresql" (the only protocol the server context chooses).</summary>
    public unsafe bool AgreedAlpn
    {
        get
        {
            lock (_lock)
            {
                OpenSsl.SSL_get0_alpn_selected(Live(), out _, out var length);
                return length > 0;
            }
        }
    }

    /// <summary>
    /// Sends TLS's close_notify if the socket takes it at once, as PostgreSQL and libpq do before
    /// they close: a peer that reads a bare close takes it for a lost connection (libpq: "SSL
    /// SYSCALL error: EOF detected"). Nothing once the peer has ended, or before the handshake did.
    /// </summary>
    public void Shutdown()
    {
        lock (_lock)
        {
            if (_ssl == 0 || _over || OpenSsl.SSL_is_init_finished(_ssl) != 1)
            {
                return;
            }

            _over = true;
            OpenSsl.ERR_clear_error();
            _ = OpenSsl.SSL_shutdown(_ssl); // One try: a full socket or a gone peer only lose the alert.
            OpenSsl.ERR_clear_error();
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_ssl != 0)
            {
                OpenSsl.SSL_free(_ssl); // The socket BIO leaves the descriptor open: the socket owns it.
                _ssl = 0;
            }
        }
    }

    private nint Live() => _ssl != 0 ? _ssl : throw new ObjectDisposedException(nameof(OpenSslSession));

    private TlsWait Wait(nint ssl, int result, string what, out bool ended)
    {
        var errno = Marshal.GetLastPInvokeError(); // Of the call that failed: SetLastError on it.
        ended = false;
        switch (OpenSsl.SSL_get_error(ssl, result))
        {
            case OpenSsl.ErrorWantRead:
                return TlsWait.Readable;
            case OpenSsl.ErrorWantWrite:
                return TlsWait.Writable;
            case OpenSsl.ErrorZeroReturn:
                ended = _over = true;
                return TlsWait.None;
            case OpenSsl.ErrorSyscall when OpenSsl.ERR_peek_error() == 0:
                _over = true;
                if (errno == 0)
                {
                    ended = true;
                    return TlsWait.None;
                }

                throw EpollSockets.Error(errno);
            default:
                _over = true;
                throw new IOException($"TLS {what} failed: {OpenSsl.TakeError("protocol error")}");
        }
    }
}
