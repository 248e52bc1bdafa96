using System.Buffers.Binary;
using System.Text;

namespace Teal.Proxy.MySql;

/// <summary>
/// The parts of the MySQL client/server protocol the proxy reads or writes: packet framing
/// (3-byte little-endian length, 1-byte sequence id), capability and status flags, and the few
/// packets it builds itself.
/// </summary>
internal static class MySqlWire
{
    public const int HeaderSize = 4;

    /// <summary>A payload of this length continues in the next packet.</summary>
    public const int MaxPayload = 0xFFFFFF;

    // Capability flags (lower 32 bits, shared by MySQL and MariaDB).
    public const uint ClientMySql = 1; // MariaDB servers clear it to say "extended capabilities follow"
    public const uint ClientCompress = 0x20;
    public const uint ClientProtocol41 = 0x200;
    public const uint ClientSsl = 0x800;
    public const uint ClientOptionalResultsetMetadata = 1u << 25; // MySQL 8
    public const uint ClientZstdCompression = 1u << 26; // MySQL 8
    public const uint ClientDeprecateEof = 1u << 24;

    // MariaDB's extended capabilities (bits 32+ of the capability set, a separate 4-byte field).
    public const uint MariaDbProgress = 1;
    public const uint MariaDbComMulti = 2;
    public const uint MariaDbCacheMetadata = 16;

    /// <summary>
    /// What the proxy takes out of the server's greeting so that clients never ask for it: TLS
    /// (the server's; the proxy offers its own when it has a certificate) and compression would
    /// hide the packets the proxy reads; optional result-set metadata changes the result-set
    /// layout it follows.
    /// </summary>
    public const uint StrippedCapabilities = ClientSsl | ClientCompress | ClientZstdCompression | ClientOptionalResultsetMetadata;

    /// <summary>Progress reports are ERR-shaped packets mid-response; cached metadata drops column definitions. Both change framing the proxy follows.</summary>
    public const uint StrippedMariaDbCapabilities = MariaDbProgress | MariaDbComMulti | MariaDbCacheMetadata;

    // Server status flags (OK and EOF packets).
    public const ushort StatusInTransaction = 0x0001;
    public const ushort StatusMoreResults = 0x0008;
    public const ushort StatusCursorExists = 0x0040;

    public const byte Ok = 0x00;
    public const byte Eof = 0xFE;
    public const byte Err = 0xFF;
    public const byte LocalInfile = 0xFB;

    /// <summary>Login: more data for the authentication plugin (caching_sha2_password's status, a public key).</summary>
    public const byte AuthMoreData = 0x01;

    /// <summary>caching_sha2_password's "cached login accepted", after <see cref="AuthMoreData"/>: the OK follows unasked.</summary>
    public const byte FastAuthSuccess = 0x03;

    /// <summary>
    /// Payload length of an SSL request: capabilities (4), maximum packet (4), collation (1) and
    /// 23 reserved bytes (MariaDB's extended capabilities in the last 4) — the handshake
    /// response's first fields, after which the client starts TLS.
    /// </summary>
    public const int SslRequestLength = 32;

    // Commands the proxy must tell apart by their response (the first byte of a command packet).
    public const byte ComQuit = 0x01;
    public const byte ComQuery = 0x03;
    public const byte ComFieldList = 0x04;
    public const byte ComProcessInfo = 0x0A;
    public const byte ComChangeUser = 0x11;
    public const byte ComBinlogDump = 0x12;
    public const byte ComTableDump = 0x13;
    public const byte ComStmtPrepare = 0x16;
    public const byte ComStmtExecute = 0x17;
    public const byte ComStmtSendLongData = 0x18;
    public const byte ComStmtClose = 0x19;
    public const byte ComStmtFetch = 0x1C;
    public const byte ComBinlogDumpGtid = 0x1E;
    public const byte ComStmtBulkExecute = 0xFA;

    // Error numbers of the packets the proxy sends itself.
    public const ushort ErConCount = 1040;
    public const ushort ErServerShutdown = 1053;
    public const ushort ErConnectionKilled = 1927;
    public const ushort ErNotSupportedYet = 1235;
    public const ushort ErSecureTransportRequired = 3159;

    /// <summary>COM_QUIT: ends the session on the server as a client leaving would.</summary>
    public static byte[] Quit { get; } = [1, 0, 0, 0, ComQuit];

    /// <summary>
    /// An ERR packet. Before the handshake (<paramref name="withSqlState"/> false) it carries no
    /// SQL state, as a server refusing a connection sends it.
    /// </summary>
    public static byte[] Error(byte sequence, ushort code, string sqlState, string message, bool withSqlState)
    {
        var text = Encoding.UTF8.GetBytes(message);
        var length = 1 + 2 + (withSqlState ? 6 : 0) + text.Length;
        var packet = new byte[HeaderSize + length];
        WriteHeader(packet, length, sequence);
        packet[4] = Err;
        BinaryPrimitives.WriteUInt16LittleEndian(packet.AsSpan(5), code);
        var offset = 7;
        if (withSqlState)
        {
            packet[offset++] = (byte)'#';
            Encoding.ASCII.GetBytes(sqlState, packet.AsSpan(offset, 5));
            offset += 5;
        }

        text.CopyTo(packet, offset);
        return packet;
    }

    public static void WriteHeader(Span<byte> packet, int length, byte sequence)
    {
        packet[0] = (byte)length;
        packet[1] = (byte)(length >> 8);
        packet[2] = (byte)(length >> 16);
        packet[3] = sequence;
    }

    public static int PayloadLength(ReadOnlySpan<byte> header) => header[0] | header[1] << 8 | header[2] << 16;

    /// <summary>
    /// Clears <see cref="StrippedCapabilities"/> (and MariaDB's <see cref="StrippedMariaDbCapabilities"/>)
    /// in an initial handshake (protocol 10) payload, in place, sets <see cref="ClientSsl"/> when
    /// the proxy offers its own TLS, and returns the server's capabilities as it sent them (the
    /// client's answer picks among those passed on). Null when it is not one (an ERR from a
    /// server refusing the connection is passed on untouched).
    /// </summary>
    public static uint? StripHandshakeCapabilities(Span<byte> payload, bool offerTls = false)
    {
        if (payload.Length < 1 || payload[0] != 10)
        {
            return null;
        }

        var versionEnd = payload[1..].IndexOf((byte)0);
        if (versionEnd < 0)
        {
            return null;
        }

        // After the version: connection id (4), scramble part 1 (8), filler (1), capabilities low (2),
        // collation (1), status (2), capabilities high (2), scramble length (1), filler (6), MariaDB capabilities (4).
        var low = 1 + versionEnd + 1 + 4 + 8 + 1;
        if (payload.Length < low + 2)
        {
            return null;
        }

        var server = (uint)BinaryPrimitives.ReadUInt16LittleEndian(payload[low..]);
        var passedOn = (server & ~StrippedCapabilities & 0xFFFF) | (offerTls ? ClientSsl : 0);
        BinaryPrimitives.WriteUInt16LittleEndian(payload[low..], (ushort)passedOn);
        var high = low + 2 + 1 + 2;
        if (payload.Length >= high + 2)
        {
            var upper = (uint)BinaryPrimitives.ReadUInt16LittleEndian(payload[high..]);
            BinaryPrimitives.WriteUInt16LittleEndian(payload[high..], (ushort)(upper & ~(StrippedCapabilities >> 16)));
            server |= upper << 16;
        }

        var mariaDb = high + 2 + 1 + 6;
        if ((server & ClientMySql) == 0 && payload.Length >= mariaDb + 4)
        {
            var extended = BinaryPrimitives.ReadUInt32LittleEndian(payload[mariaDb..]);
            BinaryPrimitives.WriteUInt32LittleEndian(payload[mariaDb..], extended & ~StrippedMariaDbCapabilities);
        }

        return server;
    }

    /// <summary>The client's capability flags from its handshake response (protocol 41), or null when too short.</summary>
    public static uint? ClientCapabilities(ReadOnlySpan<byte> payload) =>
        payload.Length >= 4 ? BinaryPrimitives.ReadUInt32LittleEndian(payload) : null;

    /// <summary>Writes the client's capability flags into its handshake response (protocol 41), in place.</summary>
    public static void SetClientCapabilities(Span<byte> payload, uint capabilities) =>
        BinaryPrimitives.WriteUInt32LittleEndian(payload, capabilities);

    /// <summary>
    /// Status flags of an OK packet (header 0x00, or 0xFE ending a result set under
    /// CLIENT_DEPRECATE_EOF): after the header, affected rows and last insert id (length-encoded).
    /// Null when <paramref name="head"/> is too short to hold them.
    /// </summary>
    public static ushort? OkStatus(ReadOnlySpan<byte> head)
    {
        var offset = 1;
        for (var i = 0; i < 2; i++)
        {
            if (offset >= head.Length)
            {
                return null;
            }

            offset += LengthEncodedSize(head[offset]);
        }

        return offset + 2 <= head.Length ? BinaryPrimitives.ReadUInt16LittleEndian(head[offset..]) : null;
    }

    /// <summary>Status flags of a classic EOF packet: header, warnings (2), status (2).</summary>
    public static ushort? EofStatus(ReadOnlySpan<byte> head) =>
        head.Length >= 5 ? BinaryPrimitives.ReadUInt16LittleEndian(head[3..]) : null;

    /// <summary>A length-encoded integer at the start of <paramref name="data"/> (null when truncated).</summary>
    public static ulong? LengthEncoded(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty)
        {
            return null;
        }

        var size = LengthEncodedSize(data[0]);
        if (data.Length < size)
        {
            return null;
        }

        return size switch
        {
            1 => data[0],
            3 => BinaryPrimitives.ReadUInt16LittleEndian(data[1..]),
            4 => (ulong)(data[1] | data[2] << 8 | data[3] << 16),
            _ => BinaryPrimitives.ReadUInt64LittleEndian(data[1..]),
        };
    }

    private static int LengthEncodedSize(byte first) => first switch
    {
        < 0xFB => 1,
        0xFC => 3,
        0xFD => 4,
        0xFE => 9,
        _ => 1, // 0xFB (NULL) and 0xFF do not occur in the fields read here
    };
}
