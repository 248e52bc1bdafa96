using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Teal.Proxy.Protocol;

namespace Teal.Proxy.Tls;

/// <summary>
/// An OpenSSL context: a server's for one certificate (clients' TLS, ended at the proxy), or the
/// one client context for the proxy's own TLS to servers under <c>prefer</c> and <c>require</c>
/// (which check no certificate, as libpq's modes of those names). TLS 1.2 or newer, no
/// renegotiation, no session tickets (PostgreSQL clients do not resume sessions), and an end of
/// stream without close_notify taken as an end of stream (libpq closes that way). Each session
/// holds its own reference, so a context lives until the last of them ends.
/// </summary>
internal sealed class OpenSslContext : SafeHandle
{
    /// <summary>The environment variable that keeps the proxy on .NET's SslStream (0) instead.</summary>
    public const string Variable = "TEAL_PROXY_OPENSSL";

    private static readonly ConditionalWeakTable<X509Certificate2, OpenSslContext?> Servers = new();

    private static readonly Lazy<OpenSslContext?> ClientContext = new(CreateClient);

    private readonly bool _server;

    private OpenSslContext(nint context, bool server)
        : base(0, ownsHandle: true)
    {
        SetHandle(context);
        _server = server;
    }

    public override bool IsInvalid => handle == 0;

    /// <summary>Why OpenSSL cannot do TLS here (then SslStream does), or null while it can.</summary>
    public static string? Unavailable { get; private set; }

    /// <summary>The server context for <paramref name="certificate"/>, or null when this process cannot use OpenSSL directly.</summary>
    public static OpenSslContext? ForServer(X509Certificate2 certificate) =>
        TurnedOff() ? null : Servers.GetValue(certificate, CreateServer);

    /// <summary>The client context for TLS to servers without checking their certificate, or null as <see cref="ForServer"/>.</summary>
    public static OpenSslContext? ForClient() => TurnedOff() ? null : ClientContext.Value;

    private static bool TurnedOff()
    {
        if (Environment.GetEnvironmentVariable(Variable) != "0")
        {
            return false;
        }

        Unavailable = $"{Variable}=0";
        return true;
    }

    private static unsafe OpenSslContext? CreateServer(X509Certificate2 certificate)
    {
        var context = Create(server: true);
        if (context is not null && !UseCertificate(context.handle, certificate, out var failure))
        {
            context.Dispose();
            Unavailable = failure;
            return null;
        }

        if (context is not null)
        {
            OpenSsl.SSL_CTX_set_alpn_select_cb(context.handle, &OnAlpn, 0);
        }

        return context;
    }

    /// <summary>
    /// ALPN, as PostgreSQL 17 answers: "postgresql" when the client offers it; a client offering
    /// only other protocols gets the fatal "no_application_protocol" alert (another protocol's
    /// TLS sent to this port). OpenSSL does not call this for a client that offers none: one that
    /// asked for TLS with an SSLRequest need not (libpq before 17 does not); one that started TLS
    /// directly is refused after the handshake without it.
    /// </summary>
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static unsafe int OnAlpn(nint ssl, byte** selected, byte* selectedLength, byte* offered, uint offeredLength, nint argument)
    {
        var list = new ReadOnlySpan<byte>(offered, (int)offeredLength);
        var wanted = PostgresWire.Alpn.Protocol.Span;
        for (var at = 0; at < list.Length && at + 1 + list[at] <= list.Length; at += 1 + list[at])
        {
            if (list.Slice(at + 1, list[at]).SequenceEqual(wanted))
            {
                // OpenSSL copies the choice: a pointer into the client's list is enough.
                *selected = offered + at + 1;
                *selectedLength = list[at];
                return OpenSsl.TlsExtensionOk;
            }
        }

        return OpenSsl.TlsExtensionAlertFatal;
    }

    private static OpenSslContext? CreateClient() => Create(server: false); // SSL_CTX_new's default: no peer verification.

    private static OpenSslContext? Create(bool server)
    {
        try
        {
            OpenSsl.ERR_clear_error();
            var context = new OpenSslContext(OpenSsl.SSL_CTX_new(server ? OpenSsl.TLS_server_method() : OpenSsl.TLS_client_method()), server);
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
                & (!server || OpenSsl.SSL_CTX_set_num_tickets(ctx, 0) == 1);
            _ = OpenSsl.SSL_CTX_ctrl(ctx, OpenSsl.CtrlSetReadAhead, 1, 0); // Returns the previous setting.
            if (!set)
            {
                context.Dispose();
                Unavailable = OpenSsl.TakeError("the TLS settings were refused");
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

    /// <summary>A session on the connected socket <paramref name="fd"/>, on this context's side of the handshake.</summary>
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

            if (_server)
            {
                OpenSsl.SSL_set_accept_state(ssl);
            }
            else
            {
                OpenSsl.SSL_set_connect_state(ssl);
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
