using System.Buffers.Binary;
using System.Text;
using Teal.Proxy.MySql;

namespace Teal.Proxy.Tests.MySql;

/// <summary>The MySQL packet scanner and session tracker on hand-made packets, including the shapes MariaDB clients rarely send.</summary>
public sealed class MySqlWireTests
{
    [Fact]
    public void Greeting_LosesTlsCompressionAndMariaDbFramingCapabilities_KeepsTheRest()
    {
        var sent = 0xF7FE | MySqlWire.ClientSsl | MySqlWire.ClientCompress | (MySqlWire.ClientDeprecateEof | MySqlWire.ClientZstdCompression);
        var payload = Greeting(capabilities: sent, mariaDb: 0x1F);

        var server = MySqlWire.StripHandshakeCapabilities(payload);

        server.ShouldBe(sent, "the server's capabilities as it sent them");
        var left = PassedOn(payload);
        (left & MySqlWire.ClientSsl).ShouldBe(0u);
        (left & MySqlWire.ClientCompress).ShouldBe(0u);
        (left & MySqlWire.ClientZstdCompression).ShouldBe(0u);
        (left & MySqlWire.ClientDeprecateEof).ShouldBe(MySqlWire.ClientDeprecateEof);
        (left & MySqlWire.ClientProtocol41).ShouldBe(MySqlWire.ClientProtocol41);
        var version = Encoding.ASCII.GetByteCount("10.11.6-MariaDB") + 2;
        BinaryPrimitives.ReadUInt32LittleEndian(payload.AsSpan(version + 13 + 2 + 1 + 2 + 2 + 1 + 6)).ShouldBe(0x1Fu & ~MySqlWire.StrippedMariaDbCapabilities);
    }

    [Fact]
    public void Greeting_OfServerWithoutTls_OffersTheProxysOwn_AndSaysTheServerHasNone()
    {
        var payload = Greeting(capabilities: 0xF7FE & ~MySqlWire.ClientSsl, mariaDb: 0);

        var server = MySqlWire.StripHandshakeCapabilities(payload, offerTls: true);

        (server!.Value & MySqlWire.ClientSsl).ShouldBe(0u, "the server offers no TLS of its own");
        (PassedOn(payload) & MySqlWire.ClientSsl).ShouldBe(MySqlWire.ClientSsl, "the client is offered the proxy's");
    }

    [Fact]
    public void ErrInsteadOfGreeting_PassedOnUntouched()
    {
        var err = MySqlWire.Error(0, 1040, "08004", "Too many connections", withSqlState: false).AsSpan(4).ToArray();
        var copy = err.ToArray();

        MySqlWire.StripHandshakeCapabilities(err).ShouldBeNull();
        err.ShouldBe(copy);
    }

    [Fact]
    public void ResultSet_SplitAtEveryByte_IdleOnlyAfterItsTerminator()
    {
        foreach (var deprecateEof in new[] { true, false })
        {
            var stream = ResultSet(deprecateEof, columns: 2, rows: 3, status: 0x0003);
            for (var split = 1; split < stream.Length; split++)
            {
                var (session, client, server) = LoggedIn(deprecateEof, Ok(sequence: 2, status: 0x0002));
                Command(session, client, MySqlWire.ComQuery);
                server.Scan(stream.AsSpan(0, split), new Sink(session));
                session.AwaitingNothing.ShouldBeFalse($"split at {split}");
                server.Scan(stream.AsSpan(split), new Sink(session));

                session.AwaitingNothing.ShouldBeTrue($"split at {split}");
                session.InTransaction.ShouldBeTrue();
                server.InPacket.ShouldBeFalse();
            }
        }
    }

    [Fact]
    public void RowStartingWith0xFE_InAFullPacket_IsARowNotTheEnd()
    {
        var (session, client, server) = LoggedIn(deprecateEof: true, Ok(2, 0x0002));
        Command(session, client, MySqlWire.ComQuery);
        server.Scan(Concat(Packet(1, [1]), Packet(2, [3, .. "def"u8])), new Sink(session));

        // A value of 16 MiB or more: its row starts with 0xFE and fills a whole packet, the rest follows.
        var full = new byte[MySqlWire.MaxPayload];
        full[0] = 0xFE;
        server.Scan(Packet(3, full), new Sink(session));
        session.AwaitingNothing.ShouldBeFalse();
        server.InPacket.ShouldBeTrue("a full packet continues in the next one");
        server.Scan(Packet(4, [0xFE, 1, 2]), new Sink(session));
        session.AwaitingNothing.ShouldBeFalse("a short continuation starting with 0xFE is still the row");
        server.InPacket.ShouldBeFalse();

        server.Scan(Packet(5, [0xFE, 0, 0, 0x02, 0, 0, 0]), new Sink(session));
        session.AwaitingNothing.ShouldBeTrue();
        session.InTransaction.ShouldBeFalse();
    }

    [Fact]
    public void MoreResults_AndPipelinedCommands_AllAnsweredBeforeIdle()
    {
        var (session, client, server) = LoggedIn(deprecateEof: true, Ok(2, 0x0002));
        Command(session, client, MySqlWire.ComQuery); // CALL: a result set, then the CALL's OK
        Command(session, client, 0x0E); // COM_PING, pipelined
        Command(session, client, MySqlWire.ComStmtClose); // no answer
        Command(session, client, MySqlWire.ComStmtPrepare);

        server.Scan(ResultSet(true, columns: 1, rows: 1, status: 0x0002 | MySqlWire.StatusMoreResults), new Sink(session));
        session.AwaitingNothing.ShouldBeFalse();
        server.Scan(Ok(1, 0x0002), new Sink(session));
        server.Scan(Ok(1, 0x0002), new Sink(session));
        session.AwaitingNothing.ShouldBeFalse("the prepare is unanswered");

        // Prepare OK: statement 1, 1 column, 2 parameters; then 3 definitions.
        server.Scan(Packet(1, [0, 1, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0]), new Sink(session));
        server.Scan(Concat(Packet(2, [3, .. "def"u8]), Packet(3, [3, .. "def"u8])), new Sink(session));
        session.AwaitingNothing.ShouldBeFalse();
        server.Scan(Packet(4, [3, .. "def"u8]), new Sink(session));
        session.AwaitingNothing.ShouldBeTrue();
    }

    [Fact]
    public void LocalInfile_WaitsForTheServersFinalOk()
    {
        var (session, client, server) = LoggedIn(deprecateEof: true, Ok(2, 0x0002));
        Command(session, client, MySqlWire.ComQuery);
        server.Scan(Packet(1, [MySqlWire.LocalInfile, .. "/tmp/x"u8]), new Sink(session));
        client.Scan(Concat(Packet(2, "1\tx\n"u8.ToArray()), Packet(3, [])), new Sink(session, fromClient: true));
        session.AwaitingNothing.ShouldBeFalse();

        server.Scan(Ok(4, 0x0002), new Sink(session));
        session.AwaitingNothing.ShouldBeTrue();
    }

    private static (MySqlSession Session, MySqlPacketScanner Client, MySqlPacketScanner Server) LoggedIn(bool deprecateEof, byte[] serverBytes)
    {
        var session = new MySqlSession();
        session.Negotiated(MySqlWire.ClientProtocol41 | (deprecateEof ? MySqlWire.ClientDeprecateEof : 0));
        var server = new MySqlPacketScanner();
        server.Scan(serverBytes, new Sink(session));
        return (session, new MySqlPacketScanner(), server);
    }

    private static void Command(MySqlSession session, MySqlPacketScanner client, byte command) =>
        client.Scan(Packet(0, [command, 1, 2, 3]), new Sink(session, fromClient: true));

    private static byte[] ResultSet(bool deprecateEof, int columns, int rows, ushort status)
    {
        var packets = new List<byte[]> { Packet(1, [(byte)columns]) };
        byte sequence = 2;
        for (var i = 0; i < columns; i++)
        {
            packets.Add(Packet(sequence++, [3, .. "def"u8, 0, 0, 0]));
        }

        if (!deprecateEof)
        {
            packets.Add(Packet(sequence++, [0xFE, 0, 0, (byte)status, (byte)(status >> 8)]));
        }

        for (var i = 0; i < rows; i++)
        {
            packets.Add(Packet(sequence++, [1, (byte)'x', 0xFB]));
        }

        packets.Add(deprecateEof
            ? Packet(sequence, [0xFE, 0, 0, (byte)status, (byte)(status >> 8), 0, 0])
            : Packet(sequence, [0xFE, 0, 0, (byte)status, (byte)(status >> 8)]));
        return Concat([.. packets]);
    }

    private static byte[] Ok(byte sequence, ushort status) => Packet(sequence, [0, 0, 0, (byte)status, (byte)(status >> 8), 0, 0]);

    private static byte[] Packet(byte sequence, byte[] payload)
    {
        var packet = new byte[4 + payload.Length];
        MySqlWire.WriteHeader(packet, payload.Length, sequence);
        payload.CopyTo(packet, 4);
        return packet;
    }

    private static byte[] Concat(params byte[][] parts) => [.. parts.SelectMany(p => p)];

    /// <summary>The capability flags in a greeting's bytes (low and high halves).</summary>
    private static uint PassedOn(byte[] payload)
    {
        var low = Encoding.ASCII.GetByteCount("10.11.6-MariaDB") + 2 + 4 + 8 + 1;
        return BinaryPrimitives.ReadUInt16LittleEndian(payload.AsSpan(low)) | (uint)BinaryPrimitives.ReadUInt16LittleEndian(payload.AsSpan(low + 5)) << 16;
    }

    private static byte[] Greeting(uint capabilities, uint mariaDb)
    {
        var payload = new List<byte> { 10 };
        payload.AddRange(Encoding.ASCII.GetBytes("10.11.6-MariaDB"));
        payload.Add(0);
        payload.AddRange(new byte[4 + 8 + 1]);
        payload.AddRange(BitConverter.GetBytes((ushort)((capabilities & ~MySqlWire.ClientMySql) & 0xFFFF)));
        payload.Add(45);
        payload.AddRange(BitConverter.GetBytes((ushort)2));
        payload.AddRange(BitConverter.GetBytes((ushort)(capabilities >> 16)));
        payload.Add(21);
        payload.AddRange(new byte[6]);
        payload.AddRange(BitConverter.GetBytes(mariaDb));
        payload.AddRange(new byte[13]);
        payload.AddRange(Encoding.ASCII.GetBytes("mysql_native_password\0"));
        return [.. payload];
    }

    private readonly struct Sink(MySqlSession session, bool fromClient = false) : IMySqlPacketSink
    {
        public void OnPacket(in MySqlPacket packet)
        {
            if (fromClient)
            {
                session.OnClientPacket(packet);
            }
            else
            {
                session.OnServerPacket(packet);
            }
        }
    }
}
