using System.Net.Sockets;

namespace Teal.Proxy.Endpoints;

/// <summary>
/// The few socket loops both protocols' connections need: whole buffers in and out, and the
/// sends and shutdowns made when the peer may already be gone.
/// </summary>
internal static class SocketIo
{
    public static async Task<bool> ReceiveExactlyAsync(Socket socket, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        while (buffer.Length > 0)
        {
            var read = await socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);
            if (read == 0)
            {
                return false;
            }

            buffer = buffer[read..];
        }

        return true;
    }

    public static async ValueTask SendAllAsync(Socket socket, ReadOnlyMemory<byte> data)
    {
        while (data.Length > 0)
        {
            var sent = await socket.SendAsync(data, SocketFlags.None);
            data = data[sent..];
        }
    }

    public static async Task SendQuietlyAsync(Socket socket, byte[] data)
    {
        try
        {
            await SendAllAsync(socket, data);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // The peer is gone already; there is nobody left to tell.
        }
    }

    public static void ShutdownQuietly(Socket socket)
    {
        try
        {
            socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            // Already closed by the peer or by an abort.
        }
    }
}
