using System.Runtime.InteropServices;

namespace Teal.Proxy.Tls;

/// <summary>
/// The few OpenSSL 3 calls the proxy makes itself to end a client's TLS on its event loop: OpenSSL
/// reads and writes the socket directly (as PgBouncer's does) instead of SslStream's copies
/// through memory buffers and its async machinery per record. The same libssl.so.3 that .NET's
/// own TLS loads on Linux.
/// </summary>
internal static partial class OpenSsl
{
    private const string Ssl = "libssl.so.3";
    private const string Crypto = "libcrypto.so.3";

    public const int ErrorNone = 0;
    public const int ErrorSsl = 1;
    public const int ErrorWantRead = 2;
    public const int ErrorWantWrite = 3;
    public const int ErrorSyscall = 5;
    public const int ErrorZeroReturn = 6;

    // ssl.h (OpenSSL 3.0).
    public const int CtrlMode = 33;
    public const int CtrlSetReadAhead = 41;
    public const int CtrlSetMinProtoVersion = 123;
    public const long ModeEnablePartialWrite = 0x1;
    public const long ModeAcceptMovingWriteBuffer = 0x2;
    public const long Tls12Version = 0x0303;
    public const ulong OptionIgnoreUnexpectedEof = 1UL << 7;
    public const ulong OptionNoCompression = 1UL << 17;
    public const ulong OptionNoRenegotiation = 1UL << 30;
    public const int BioCallbackRead = 0x02;
    public const int BioCallbackReturn = 0x80;

    // tls1.h: what an ALPN select callback answers.
    public const int TlsExtensionOk = 0;
    public const int TlsExtensionAlertFatal = 2;

    [LibraryImport(Ssl)]
    public static partial nint TLS_server_method();

    [LibraryImport(Ssl)]
    public static partial nint TLS_client_method();

    [LibraryImport(Ssl)]
    public static partial nint SSL_CTX_new(nint method);

    [LibraryImport(Ssl)]
    public static partial void SSL_CTX_free(nint context);

    [LibraryImport(Ssl)]
    public static partial long SSL_CTX_ctrl(nint context, int command, long argument, nint pointer);

    [LibraryImport(Ssl)]
    public static partial ulong SSL_CTX_set_options(nint context, ulong options);

    [LibraryImport(Ssl)]
    public static partial int SSL_CTX_set_num_tickets(nint context, nuint tickets);

    [LibraryImport(Ssl)]
    public static partial int SSL_CTX_use_certificate(nint context, nint certificate);

    [LibraryImport(Ssl)]
    public static partial int SSL_CTX_add1_chain_cert(nint context, nint certificate);

    [LibraryImport(Ssl)]
    public static partial int SSL_CTX_use_PrivateKey(nint context, nint key);

    [LibraryImport(Ssl)]
    public static partial int SSL_CTX_check_private_key(nint context);

    [LibraryImport(Ssl)]
    public static partial nint SSL_new(nint context);

    [LibraryImport(Ssl)]
    public static partial void SSL_free(nint ssl);

    [LibraryImport(Ssl)]
    public static partial int SSL_set_fd(nint ssl, int fd);

    [LibraryImport(Ssl)]
    public static partial void SSL_set_accept_state(nint ssl);

    [LibraryImport(Ssl)]
    public static partial void SSL_set_connect_state(nint ssl);

    [LibraryImport(Ssl, SetLastError = true)]
    public static partial int SSL_do_handshake(nint ssl);

    [LibraryImport(Ssl, SetLastError = true)]
    public static partial int SSL_read(nint ssl, ref byte buffer, int count);

    [LibraryImport(Ssl, SetLastError = true)]
    public static partial int SSL_write(nint ssl, in byte buffer, int count);

    [LibraryImport(Ssl)]
    public static partial int SSL_shutdown(nint ssl);

    [LibraryImport(Ssl)]
    public static partial int SSL_is_init_finished(nint ssl);

    [LibraryImport(Ssl)]
    public static partial int SSL_get_error(nint ssl, int result);

    [LibraryImport(Ssl)]
    public static partial int SSL_has_pending(nint ssl);

    [LibraryImport(Ssl)]
    public static partial nint SSL_get_rbio(nint ssl);

    [LibraryImport(Ssl)]
    public static unsafe partial void SSL_CTX_set_alpn_select_cb(nint context, delegate* unmanaged[Cdecl]<nint, byte**, byte*, byte*, uint, nint, int> callback, nint argument);

    [LibraryImport(Ssl)]
    public static unsafe partial void SSL_get0_alpn_selected(nint ssl, out byte* protocol, out uint length);

    [LibraryImport(Crypto)]
    public static unsafe partial void BIO_set_callback_ex(nint bio, delegate* unmanaged[Cdecl]<nint, int, nint, nuint, int, nint, int, nuint*, nint> callback);

    [LibraryImport(Crypto)]
    public static partial void ERR_clear_error();

    [LibraryImport(Crypto)]
    public static partial ulong ERR_get_error();

    [LibraryImport(Crypto)]
    public static partial ulong ERR_peek_error();

    [LibraryImport(Crypto)]
    public static unsafe partial void ERR_error_string_n(ulong error, byte* buffer, nuint length);

    [LibraryImport(Crypto)]
    public static partial nint d2i_X509(nint reuse, ref nint data, long length);

    [LibraryImport(Crypto)]
    public static partial void X509_free(nint certificate);

    [LibraryImport(Crypto)]
    public static partial nint d2i_AutoPrivateKey(nint reuse, ref nint data, long length);

    [LibraryImport(Crypto)]
    public static partial void EVP_PKEY_free(nint key);

    /// <summary>OpenSSL's oldest queued error in words (and the queue emptied), or <paramref name="otherwise"/>.</summary>
    public static unsafe string TakeError(string otherwise)
    {
        var first = ERR_get_error();
        ERR_clear_error();
        if (first == 0)
        {
            return otherwise;
        }

        var text = stackalloc byte[256];
        ERR_error_string_n(first, text, 256);
        return Marshal.PtrToStringUTF8((nint)text) ?? otherwise;
    }
}
