using System.Buffers.Binary;
using System.Net.Sockets;

namespace Teal.Proxy.Protocol;

/// <summary>
/// Reads whole typed messages from a socket, for the few exchanges the proxy takes part in itself
/// (a login it relays, a session it moves). Never reads past the message it returns, so the
/// forwarding pumps can take the socket over after it; <paramref name="prefix"/> holds bytes
/// already received that belong before anything still in the socket.
/// </summary>
internal sealed class MessageReader(Func<Memory<byte>, CancellationToken, ValueTask<int>> receive, ReadOnlyMemory<byte> prefix = default)
{
    public MessageReader(Socket socket, ReadOnlyMemory<byte> prefix = default)
        : this((buffer, cancellationToken) => socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken), prefix)
    {
    }

    /// <summary>No message the proxy reads itself is legitimately near this size.</summary>
    private const int MaxMessage = 1 << 24;

    private ReadOnlyMemory<byte> _prefix = prefix;

    /// <summary>Bytes received with the prefix that no message returned so far took: what follows on the stream.</summary>
    public ReadOnlyMemory<byte> Unread => _prefix;

    /// <summary>The next message: type, body, and the whole message as received (to forward it).</summary>
    public async Task<(byte Type, byte[] Body, byte[] Raw)?> ReadAsync(CancellationToken cancellationToken)
    {
        var header = new byte[5];
        if (!await FillAsync(header, cancellationToken))
        {
            return null;
        }

        var length = BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(1));
        if (length < 4 || length > MaxMessage)
        {
            throw new InvalidDataException($"invalid PostgreSQL message length {length} for type '{(char)header[0]}'");
        }

        var raw = new byte[1 + length];
        header.CopyTo(raw, 0);
        if (!await FillAsync(raw.AsMemory(5), cancellationToken))
        {
            return null;
        }

        return (header[0], raw[5..], raw);
    }

    private async Task<bool> FillAsync(Memory<byte> buffer, CancellationToken cancellationToken)
    {
        if (_prefix.Length > 0)
        {
            var take = Math.Min(_prefix.Length, buffer.Length);
            _prefix[..take].CopyTo(buffer);
            _prefix = _prefix[take..];
            buffer = buffer[take..];
        }

        while (buffer.Length > 0)
        {
            var read = await receive(buffer, cancellationToken);
            if (read == 0)
            {
                return false;
            }

            buffer = buffer[read..];
        }

        return true;
    }
}
