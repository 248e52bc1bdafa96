namespace Teal.Proxy.Protocol;

/// <summary>
/// What a chunk from the client means for the session: how many messages in it will each be
/// answered by one ReadyForQuery (Query, FunctionCall, Sync), and whether extended-protocol
/// messages are waiting for their Sync.
/// </summary>
internal struct ClientMessages : IMessageSink
{
    public int Syncs;
    public bool Unsynced;
    public bool Terminated;

    public void OnMessage(byte type, int bodyLength, ulong smallBody)
    {
        switch (type)
        {
            case (byte)'Q':
            case (byte)'F':
                Syncs++;
                break;
            case (byte)'S':
                Syncs++;
                Unsynced = false;
                break;
            case (byte)'P':
            case (byte)'B':
            case (byte)'E':
            case (byte)'D':
            case (byte)'C':
            case (byte)'H':
                Unsynced = true;
                break;
            case (byte)'X':
                Terminated = true;
                break;
            default:
                // CopyData/CopyDone/CopyFail belong to the Query that started the COPY; password
                // messages come before the first ReadyForQuery. Neither changes the count.
                break;
        }
    }
}

/// <summary>What a chunk from the server says: ReadyForQuery messages and the last status, BackendKeyData.</summary>
internal struct BackendMessages : IMessageSink
{
    public int Ready;
    public byte Status;
    public bool HasKey;
    public ulong Key;

    public void OnMessage(byte type, int bodyLength, ulong smallBody)
    {
        if (type == (byte)'Z' && bodyLength == 1)
        {
            Ready++;
            Status = (byte)smallBody;
        }
        else if (type == (byte)'K' && bodyLength == 8)
        {
            HasKey = true;
            Key = smallBody;
        }
    }
}
