using System.Buffers.Binary;
using System.Net.Security;
using System.Text;

namespace Teal.Proxy.Protocol;

/// <summary>
/// The few pieces of the PostgreSQL wire protocol (v3) the proxy needs: the untyped packets a
/// client may open with, and the ErrorResponse the proxy itself sends.
/// </summary>
internal static class PostgresWire
{
    /// <summary>Protocol 3.0 startup packet code.</summary>
    public const int ProtocolVersion3 = 196608;

    public const int SslRequestCode = 80877103;

    public const int GssEncRequestCode = 80877104;

    public const int CancelRequestCode = 80877102;

    /// <summary>A TLS record's first byte when it carries a handshake: a direct TLS connection's first byte.</summary>
    public const byte TlsHandshakeRecord = 0x16;

    /// <summary>The ALPN protocol of PostgreSQL's direct TLS connections (PostgreSQL 17).</summary>
    public static readonly SslApplicationProtocol Alpn = new("postgresql"u8.ToArray());

    /// <summary>A CancelRequest is always 16 bytes: length, code, process id, secret key.</summary>
    public const int CancelRequestLength = 16;

    /// <summary>A startup packet above this size is not PostgreSQL (the server allows 10000).</summary>
    public const int MaxStartupPacket = 10000;

    /// <summary>SQLSTATE 57P03 cannot_connect_now: a held connection's deadline passed.</summary>
    public const string CannotConnectNow = "57P03";

    /// <summary>SQLSTATE 57P01 admin_shutdown: drivers treat it as "reconnect".</summary>
    public const string AdminShutdown = "57P01";

    /// <summary>SQLSTATE 53300 too_many_connections: the endpoint's connection cap is reached.</summary>
    public const string TooManyConnections = "53300";

    /// <summary>SQLSTATE 28000 invalid_authorization_specification: what PostgreSQL answers a login its pg_hba.conf does not allow.</summary>
    public const string InvalidAuthorization = "28000";

    /// <summary>SQLSTATE 08006 connection_failure: the instance behind the endpoint is unreachable.</summary>
    public const string ConnectionFailure = "08006";

    /// <summary>invalid_password: a wrong password, or a role that does not exist.</summary>
    public const string InvalidPassword = "28P01";

    /// <summary>protocol_violation.</summary>
    public const string ProtocolViolation = "08P01";

    /// <summary>Terminate ('X'), sent upstream so the backend ends the session cleanly.</summary>
    public static ReadOnlySpan<byte> Terminate => [(byte)'X', 0, 0, 0, 4];

    /// <summary>An AuthenticationSASL message without the channel-binding mechanisms (-PLUS); other messages as they are.</summary>
    public static byte[] WithoutChannelBinding(byte[] message)
    {
        if (message.Length < 9 || message[0] != (byte)'R' || BinaryPrimitives.ReadInt32BigEndian(message.AsSpan(5)) != 10)
        {
            return message;
        }

        var mechanisms = Encoding.UTF8.GetString(message, 9, message.Length - 9).Split('\0', StringSplitOptions.RemoveEmptyEntries);
        var kept = mechanisms.Where(m => !m.EndsWith("-PLUS", StringComparison.Ordinal)).ToArray();
        if (kept.Length == mechanisms.Length)
        {
            return message;
        }

        var body = Encoding.UTF8.GetBytes(string.Concat(kept.Select(m => m + "\0")) + "\0");
        var rewritten = new byte[9 + body.Length];
        rewritten[0] = (byte)'R';
        BinaryPrimitives.WriteInt32BigEndian(rewritten.AsSpan(1), 8 + body.Length);
        BinaryPrimitives.WriteInt32BigEndian(rewritten.AsSpan(5), 10);
        body.CopyTo(rewritten, 9);
        return rewritten;
    }

    /// <summary>A FATAL ErrorResponse with <paramref name="sqlState"/> and <paramref name="message"/>.</summary>
    public static byte[] FatalError(string sqlState, string message)
    {
        // Fields: S (localized severity), V (severity, never localized; 9.6+), C, M; then a zero.
        var fields = new (byte Code, string Value)[] { ((byte)'S', "FATAL"), ((byte)'V', "FATAL"), ((byte)'C', sqlState), ((byte)'M', message) };
        var bodyLength = 1;
        foreach (var (_, value) in fields)
        {
            bodyLength += 1 + Encoding.UTF8.GetByteCount(value) + 1;
        }

        var packet = new byte[1 + 4 + bodyLength];
        packet[0] = (byte)'E';
        BinaryPrimitives.WriteInt32BigEndian(packet.AsSpan(1), 4 + bodyLength);
        var at = 5;
        foreach (var (code, value) in fields)
        {
            packet[at++] = code;
            at += Encoding.UTF8.GetBytes(value, packet.AsSpan(at));
            packet[at++] = 0;
        }

        packet[at] = 0;
        return packet;
    }
}
