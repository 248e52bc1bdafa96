using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Teal.Proxy.Endpoints;

namespace Teal.Proxy.Tls;

/// <summary>
/// An OpenSSL server context for one certificate: TLS 1.2 or newer, no renegotiation, no session
/// tickets (PostgreSQL clients do not resume sessions), and a client's end of stream without
/// close_notify taken as an end of stream (libpq closes that way). Shared by every connection
/// that shows this certificate; each session holds its own reference, so the context lives
/// until the last of them ends.
/// </summary>
internal sealed class OpenSslServer : SafeHandle
{
    /// <summary>The environment variable that keeps the proxy on .NET's SslStream (0) instead.</summary>
    public const string Variable = "TEAL_PROXY_OPENSSL";

    private static readonly ConditionalWeakTable<X509Certificate2, OpenSslServer?> Contexts = new();

    private OpenSslServer(nint context)
        : base(0, ownsHandle: true) => SetHandle(context);

    public override bool IsInvalid => handle == 0;

    /// <summary>Why OpenSSL cannot end TLS here (then SslStream does), or null while it can.</summary>
    public static string? Unavailable { get; private set; }

    /// <summary>The context for <paramref name="certificate"/>, or null when this process cannot use OpenSSL directly.</summary>
    public static OpenSslServer? For(X509Certificate2 certificate)
    {
        if (Environment.GetEnvironmentVariable(Variable) == "0")
        {
            Unavailable = $"{Variable}=0";
            return null;
        }

        return Contexts.GetValue(certificate, Create);
    }

    private static OpenSslServer? Create(X509Certificate2 certificate)
    {
        try
        {
            OpenSsl.ERR_clear_error();
            var context = new OpenSslServer(OpenSsl.SSL_CTX_new(OpenSsl.TLS_server_method()));
            if (context.IsInvalid)
            {
                Unavailable = OpenSsl.TakeError("SSL_CTX_new failed");
                return null;
            }

            var ctx = context.handle;
            _ = OpenSsl.SSL_CTX_set_options(ctx, OpenSsl.OptionNoRenegotiation | OpenSsl.OptionNoCompression | OpenSsl.OptionIgnoreUnexpectedEof);
            // Partial writes and a moving buffer: a send that would block is retried later with
            // what is left, from wherever the caller holds it. Read-ahead: one read per record
            // instead of two (header, then body).
            var set = OpenSsl.SSL_CTX_ctrl(ctx, OpenSsl.CtrlSetMinProtoVersion, OpenSsl.Tls12Version, 0) == 1
                & (OpenSsl.SSL_CTX_ctrl(ctx, OpenSsl.CtrlMode, OpenSsl.ModeEnablePartialWrite | OpenSsl.ModeAcceptMovingWriteBuffer, 0) & 3) == 3
                & OpenSsl.SSL_CTX_set_num_tickets(ctx, 0) == 1;
            _ = OpenSsl.SSL_CTX_ctrl(ctx, OpenSsl.CtrlSetReadAhead, 1, 0); // Returns the previous setting.
            if (!set)
            {
                context.Dispose();
                Unavailable = OpenSsl.TakeError("the TLS settings were refused");
                return null;
            }

            if (!UseCertificate(ctx, certificate, out var failure))
            {
                context.Dispose();
                Unavailable = failure;
                return null;
            }

            return context;
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            Unavailable = $"OpenSSL 3 (libssl.so.3) not loadable: {ex.Message}";
            return null;
        }
    }

    private static unsafe bool UseCertificate(nint ctx, X509Certificate2 certificate, out string failure)
    {
        byte[] key;
        try
        {
            using AsymmetricAlgorithm? algorithm = certificate.GetECDsaPrivateKey() ?? (AsymmetricAlgorithm?)certificate.GetRSAPrivateKey();
            if (algorithm is null)
            {
                failure = "the certificate's key is neither EC nor RSA";
                return false;
            }

            key = algorithm.ExportPkcs8PrivateKey();
        }
        catch (CryptographicException ex)
        {
            failure = $"the certificate's key cannot be handed to OpenSSL: {ex.Message}";
            return false;
        }

        try
        {
            fixed (byte* der = certificate.RawData)
            {
                var at = (nint)der;
                var x509 = OpenSsl.d2i_X509(0, ref at, certificate.RawData.Length);
                if (x509 == 0)
                {
                    failure = OpenSsl.TakeError("the certificate does not parse");
                    return false;
                }

                var used = OpenSsl.SSL_CTX_use_certificate(ctx, x509); // Takes its own reference.
                OpenSsl.X509_free(x509);
                if (used != 1)
                {
                    failure = OpenSsl.TakeError("SSL_CTX_use_certificate failed");
                    return false;
                }
            }

            fixed (byte* der = key)
            {
                var at = (nint)der;
                var pkey = OpenSsl.d2i_AutoPrivateKey(0, ref at, key.Length);
                if (pkey == 0)
                {
                    failure = OpenSsl.TakeError("the key does not parse");
                    return false;
                }

                var used = OpenSsl.SSL_CTX_use_PrivateKey(ctx, pkey);
                OpenSsl.EVP_PKEY_free(pkey);
                if (used != 1 || OpenSsl.SSL_CTX_check_private_key(ctx) != 1)
                {
                    failure = OpenSsl.TakeError("the key does not match the certificate");
                    return false;
                }
            }

            failure = "";
            return true;
        }
        finally
        {
            CryptographicOperations.ZeroMemory(key);
        }
    }

    /// <summary>A session on the connected socket <paramref name="fd"/>, for one client.</summary>
    public OpenSslSession NewSession(int fd)
    {
        var added = false;
        DangerousAddRef(ref added);
        try
        {
            OpenSsl.ERR_clear_error();
            var ssl = OpenSsl.SSL_new(handle);
            if (ssl == 0)
            {
                throw new IOException($"TLS: {OpenSsl.TakeError("SSL_new failed")}");
            }

            if (OpenSsl.SSL_set_fd(ssl, fd) != 1)
            {
                OpenSsl.SSL_free(ssl);
                throw new IOException($"TLS: {OpenSsl.TakeError("SSL_set_fd failed")}");
            }

            OpenSslSession.WatchReads(ssl);
            return new OpenSslSession(ssl);
        }
        finally
        {
            DangerousRelease();
        }
    }

    protected override bool ReleaseHandle()
    {
        OpenSsl.SSL_CTX_free(handle);
        return true;
    }
}

/// <summary>What an OpenSSL call needs before it can go on.</summary>
internal enum TlsWait
{
    None,
    Readable,
    Writable,
}

/// <summary>
/// One client's TLS, OpenSSL reading and writing its (non-blocking) socket. Every call holds the
/// session's lock: a connection's receive and its sends can run on two event loops, and one
/// OpenSSL session must not be used by two threads at once. Freed by <see cref="Dispose"/>, after
/// which every call fails as a closed socket does.
/// </summary>
internal sealed class OpenSslSession : IDisposable
{
    private readonly Lock _lock = new();
    private nint _ssl;

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

    /// <summary>One step of the server handshake: <see cref="TlsWait.None"/> once it is done.</summary>
    public TlsWait Accept()
    {
        lock (_lock)
        {
            var ssl = Live();
            OpenSsl.ERR_clear_error();
            var result = OpenSsl.SSL_accept(ssl);
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
                throw new IOException("TLS: the client closed the connection");
            }

            return -1;
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

    private static TlsWait Wait(nint ssl, int result, string what, out bool ended)
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
                ended = true;
                return TlsWait.None;
            case OpenSsl.ErrorSyscall when OpenSsl.ERR_peek_error() == 0:
                if (errno == 0)
                {
                    ended = true;
                    return TlsWait.None;
                }

                throw EpollSockets.Error(errno);
            default:
                throw new IOException($"TLS {what} failed: {OpenSsl.TakeError("protocol error")}");
        }
    }
}
