using System.Buffers;
using System.Buffers.Binary;
using System.Text;

namespace Teal.Proxy.Protocol;

/// <summary>Builds frontend messages the proxy sends on its own (moving a session), appended into one batch.</summary>
internal sealed class MessageWriter
{
    private readonly ArrayBufferWriter<byte> _batch = new();

    public byte[] ToArray() => _batch.WrittenSpan.ToArray();

    /// <summary>A startup packet (protocol 3.0) with <paramref name="parameters"/>.</summary>
    public static byte[] Startup(IEnumerable<KeyValuePair<string, string>> parameters)
    {
        var body = new ArrayBufferWriter<byte>();
        foreach (var (name, value) in parameters)
        {
            WriteCString(body, name);
            WriteCString(body, value);
        }

        body.Write([(byte)0]);
        var packet = new byte[8 + body.WrittenCount];
        BinaryPrimitives.WriteInt32BigEndian(packet, packet.Length);
        BinaryPrimitives.WriteInt32BigEndian(packet.AsSpan(4), PostgresWire.ProtocolVersion3);
        body.WrittenSpan.CopyTo(packet.AsSpan(8));
        return packet;
    }

    /// <summary>The name/value pairs of a startup packet.</summary>
    public static List<KeyValuePair<string, string>> StartupParameters(byte[] packet)
    {
        var parameters = new List<KeyValuePair<string, string>>();
        var at = 8;
        while (at < packet.Length && packet[at] != 0)
        {
            var name = ReadCString(packet, ref at);
            var value = ReadCString(packet, ref at);
            parameters.Add(new(name, value));
        }

        return parameters;
    }

    public static string ReadCString(ReadOnlySpan<byte> data, ref int at)
    {
        var end = data[at..].IndexOf((byte)0);
        if (end < 0)
        {
            throw new InvalidDataException("unterminated string in a PostgreSQL message");
        }

        var value = Encoding.UTF8.GetString(data.Slice(at, end));
        at += end + 1;
        return value;
    }

    public MessageWriter SaslInitialResponse(string mechanism, string data)
    {
        var bytes = Encoding.UTF8.GetBytes(data);
        return Message((byte)'p', body =>
        {
            WriteCString(body, mechanism);
            WriteInt32(body, bytes.Length);
            body.Write(bytes);
        });
    }

    public MessageWriter SaslResponse(string data) => Message((byte)'p', body => body.Write(Encoding.UTF8.GetBytes(data)));

    public MessageWriter Query(string sql) => Message((byte)'Q', body => WriteCString(body, sql));

    public MessageWriter Parse(string name, string sql, IReadOnlyList<uint> parameterTypes) => Message((byte)'P', body =>
    {
        WriteCString(body, name);
        WriteCString(body, sql);
        WriteInt16(body, parameterTypes.Count);
        foreach (var type in parameterTypes)
        {
            WriteInt32(body, unchecked((int)type));
        }
    });

    /// <summary>Binds the unnamed statement to the unnamed portal with text parameters and text results.</summary>
    public MessageWriter Bind(params string[] parameters) => Message((byte)'B', body =>
    {
        WriteCString(body, string.Empty);
        WriteCString(body, string.Empty);
        WriteInt16(body, 0);
        WriteInt16(body, parameters.Length);
        foreach (var parameter in parameters)
        {
            var bytes = Encoding.UTF8.GetBytes(parameter);
            WriteInt32(body, bytes.Length);
            body.Write(bytes);
        }

        WriteInt16(body, 0);
    });

    public MessageWriter Execute() => Message((byte)'E', body =>
    {
        WriteCString(body, string.Empty);
        WriteInt32(body, 0);
    });

    public MessageWriter Sync() => Message((byte)'S', _ => { });

    private MessageWriter Message(byte type, Action<ArrayBufferWriter<byte>> write)
    {
        var body = new ArrayBufferWriter<byte>();
        write(body);
        _batch.Write([type]);
        WriteInt32(_batch, body.WrittenCount + 4);
        _batch.Write(body.WrittenSpan);
        return this;
    }

    private static void WriteCString(ArrayBufferWriter<byte> stream, string value)
    {
        stream.Write(Encoding.UTF8.GetBytes(value));
        stream.Write([(byte)0]);
    }

    private static void WriteInt32(ArrayBufferWriter<byte> stream, int value)
    {
        Span<byte> bytes = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(bytes, value);
        stream.Write(bytes);
    }

    private static void WriteInt16(ArrayBufferWriter<byte> stream, int value)
    {
        Span<byte> bytes = stackalloc byte[2];
        BinaryPrimitives.WriteInt16BigEndian(bytes, (short)value);
        stream.Write(bytes);
    }
}
