using System.Buffers.Binary;

namespace Teal.Proxy.Protocol;

/// <summary>Receives each complete message a <see cref="MessageFramer"/> walks over.</summary>
internal interface IMessageSink
{
    /// <param name="type">The message type byte.</param>
    /// <param name="bodyLength">Body length (the length field minus its own four bytes).</param>
    /// <param name="smallBody">For bodies of at most eight bytes, the body big-endian in the low bytes; else 0.</param>
    void OnMessage(byte type, int bodyLength, ulong smallBody);
}

/// <summary>
/// Follows the typed-message framing (type byte, 4-byte length) across the chunks a socket
/// returns, without copying: a chunk may end anywhere, even inside a header. Small bodies are
/// gathered on the way because the two the proxy reads — ReadyForQuery's status and
/// BackendKeyData — are one and eight bytes long.
/// </summary>
internal struct MessageFramer
{
    private const int HeaderSize = 5;

    private int _headerRead;
    private byte _type;
    private int _bodyLength;
    private int _bodyRead;
    private ulong _smallBody;

    /// <summary>Whether a message has begun and not yet ended.</summary>
    public readonly bool InMessage => _headerRead > 0;

    public void Scan<TSink>(ReadOnlySpan<byte> data, ref TSink sink)
        where TSink : struct, IMessageSink
    {
        var at = 0;
        while (at < data.Length)
        {
            if (_headerRead < HeaderSize)
            {
                if (_headerRead == 0 && data.Length - at >= HeaderSize)
                {
                    _type = data[at];
                    _bodyLength = BinaryPrimitives.ReadInt32BigEndian(data[(at + 1)..]) - 4;
                    at += HeaderSize;
                    _headerRead = HeaderSize;
                }
                else
                {
                    // A header split across chunks: gather it byte by byte (rare).
                    var b = data[at++];
                    if (_headerRead == 0)
                    {
                        _type = b;
                        _bodyLength = 0;
                    }
                    else
                    {
                        _bodyLength = (_bodyLength << 8) | b;
                    }

                    if (++_headerRead < HeaderSize)
                    {
                        continue;
                    }

                    _bodyLength -= 4;
                }

                if (_bodyLength < 0)
                {
                    throw new InvalidDataException($"invalid PostgreSQL message length for type '{(char)_type}'");
                }

                _bodyRead = 0;
                _smallBody = 0;
            }

            var take = Math.Min(_bodyLength - _bodyRead, data.Length - at);
            if (_bodyLength <= 8)
            {
                for (var i = 0; i < take; i++)
                {
                    _smallBody = (_smallBody << 8) | data[at + i];
                }
            }

            _bodyRead += take;
            at += take;
            if (_bodyRead == _bodyLength)
            {
                sink.OnMessage(_type, _bodyLength, _smallBody);
                _headerRead = 0;
            }
        }
    }
}
