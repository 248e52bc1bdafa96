namespace Teal.Proxy.MySql;

/// <summary>One packet as the scanner reports it: its header and the first bytes of its payload.</summary>
/// <param name="sequence">The packet's sequence id (0 starts a command).</param>
/// <param name="length">The payload length from the header.</param>
/// <param name="continuation">True when it continues a packet of <see cref="MySqlWire.MaxPayload"/> bytes: part of one larger payload, not a packet of its own.</param>
/// <param name="head">The first up to <see cref="MySqlPacketScanner.HeadSize"/> payload bytes.</param>
internal readonly ref struct MySqlPacket(byte sequence, int length, bool continuation, ReadOnlySpan<byte> head)
{
    public byte Sequence { get; } = sequence;

    public int Length { get; } = length;

    public bool Continuation { get; } = continuation;

    public ReadOnlySpan<byte> Head { get; } = head;

    public byte First => Head.IsEmpty ? (byte)0 : Head[0];
}

/// <summary>Receives the packets a <see cref="MySqlPacketScanner"/> finds.</summary>
internal interface IMySqlPacketSink
{
    void OnPacket(in MySqlPacket packet);
}

/// <summary>
/// Follows packet boundaries in one direction of a MySQL connection as bytes pass through, chunk
/// by chunk, without copying more than a packet's first bytes: enough to read a command byte,
/// an OK packet's status flags or a column count. Each packet is reported once, as soon as its
/// head is in (the rest of its payload may still be on the way: <see cref="InPacket"/> says so).
/// Touched only by the pump of its direction.
/// </summary>
internal sealed class MySqlPacketScanner
{
    /// <summary>Covers an OK packet up to its status flags (header, two 9-byte length-encoded integers, 2 bytes).</summary>
    public const int HeadSize = 24;

    private readonly byte[] _header = new byte[MySqlWire.HeaderSize];
    private readonly byte[] _head = new byte[HeadSize];
    private int _headerRead;
    private int _remaining;
    private int _headRead;
    private int _length;
    private bool _reported;
    private bool _continues;

    /// <summary>
    /// A packet is partly received, or a payload continues in a packet not yet started: the
    /// direction is not at a message boundary.
    /// </summary>
    public bool InPacket => _headerRead != 0 || _continues;

    public void Scan<TSink>(ReadOnlySpan<byte> data, TSink sink)
        where TSink : IMySqlPacketSink
    {
        while (!data.IsEmpty)
        {
            if (_headerRead < MySqlWire.HeaderSize)
            {
                var take = Math.Min(MySqlWire.HeaderSize - _headerRead, data.Length);
                data[..take].CopyTo(_header.AsSpan(_headerRead));
                _headerRead += take;
                data = data[take..];
                if (_headerRead < MySqlWire.HeaderSize)
                {
                    return;
                }

                _length = MySqlWire.PayloadLength(_header);
                _remaining = _length;
                _headRead = 0;
                _reported = false;
                if (_length == 0)
                {
                    Report(sink);
                    EndPacket();
                }

                continue;
            }

            var chunk = Math.Min(_remaining, data.Length);
            if (!_reported)
            {
                var wanted = Math.Min(Math.Min(_length, HeadSize) - _headRead, chunk);
                data[..wanted].CopyTo(_head.AsSpan(_headRead));
                _headRead += wanted;
                if (_headRead == Math.Min(_length, HeadSize))
                {
                    Report(sink);
                }
            }

            _remaining -= chunk;
            data = data[chunk..];
            if (_remaining == 0)
            {
                EndPacket();
            }
        }
    }

    private void Report<TSink>(TSink sink)
        where TSink : IMySqlPacketSink
    {
        _reported = true;
        sink.OnPacket(new MySqlPacket(_header[3], _length, _continues, _head.AsSpan(0, _headRead)));
    }

    private void EndPacket()
    {
        _headerRead = 0;
        _continues = _length == MySqlWire.MaxPayload;
    }
}
