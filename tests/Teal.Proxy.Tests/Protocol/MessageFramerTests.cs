using System.Buffers.Binary;
using Teal.Proxy.Protocol;

namespace Teal.Proxy.Tests.Protocol;

public sealed class MessageFramerTests
{
    [Fact]
    public void Scan_ChunksSplitAnywhere_SeesEveryMessageOnce()
    {
        byte[] stream = [.. Message('K', [0, 0, 0x30, 0x39, 0xDE, 0xAD, 0xBE, 0xEF]), .. Message('Z', [(byte)'I']), .. Message('D', new byte[300]), .. Message('Z', [(byte)'T']), .. Message('C', []), .. Message('Z', [(byte)'E'])];

        for (var chunk = 1; chunk <= stream.Length; chunk++)
        {
            var framer = default(MessageFramer);
            var messages = default(BackendMessages);
            for (var at = 0; at < stream.Length; at += chunk)
            {
                framer.Scan(stream.AsSpan(at, Math.Min(chunk, stream.Length - at)), ref messages);
            }

            messages.Ready.ShouldBe(3, $"chunk size {chunk}");
            ((char)messages.Status).ShouldBe('E');
            messages.HasKey.ShouldBeTrue();
            messages.Key.ShouldBe(0x00003039_DEADBEEFUL);
            framer.InMessage.ShouldBeFalse();
        }
    }

    [Fact]
    public void Scan_ExtendedProtocolWithoutSync_IsUnsyncedUntilSync()
    {
        var framer = default(MessageFramer);
        var messages = default(ClientMessages);
        framer.Scan([.. Message('P', new byte[10]), .. Message('B', new byte[12]), .. Message('E', new byte[5])], ref messages);
        messages.Unsynced.ShouldBeTrue();
        messages.Syncs.ShouldBe(0);

        framer.Scan(Message('S', []), ref messages);
        messages.Unsynced.ShouldBeFalse();
        messages.Syncs.ShouldBe(1);
    }

    [Fact]
    public void Scan_HalfAMessage_IsInMessage()
    {
        var framer = default(MessageFramer);
        var messages = default(ClientMessages);
        var query = Message('Q', "select 1\0"u8.ToArray());

        framer.Scan(query.AsSpan(0, 7), ref messages);

        framer.InMessage.ShouldBeTrue();
        messages.Syncs.ShouldBe(0);
        framer.Scan(query.AsSpan(7), ref messages);
        framer.InMessage.ShouldBeFalse();
        messages.Syncs.ShouldBe(1);
    }

    [Fact]
    public void Scan_NegativeLength_Throws()
    {
        var framer = default(MessageFramer);
        var messages = default(ClientMessages);
        byte[] bad = [(byte)'Q', 0, 0, 0, 2];

        Should.Throw<InvalidDataException>(() => framer.Scan(bad, ref messages));
    }

    private static byte[] Message(char type, byte[] body)
    {
        var message = new byte[5 + body.Length];
        message[0] = (byte)type;
        BinaryPrimitives.WriteInt32BigEndian(message.AsSpan(1), 4 + body.Length);
        body.CopyTo(message, 5);
        return message;
    }
}
