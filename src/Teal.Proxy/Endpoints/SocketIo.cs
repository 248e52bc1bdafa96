using System.Net.Sockets;
using Teal.Core.Endpoints;

namespace Teal.Proxy.Endpoints;

/// <summary>
/// The few socket loops both protocols' connections need: whole buffers in and out, and the
/// sends and shutdowns made when the peer may already be gone.
/// </summary>
internal static class SocketIo
{
    /// <summary>
    /// Connects <paramref name="server"/> to the target within <paramref name="timeout"/>: null when
    /// connected, else why not, in words for the client's error. Stopping Teal throws as usual.
    /// </summary>
    public static async Task<string?> ConnectAsync(Socket server, EndpointTarget target, TimeSpan timeout, CancellationToken stopping)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        deadline.CancelAfter(timeout);
        try
        {
            await server.ConnectAsync(target.Host, target.Port, deadline.Token);
            return null;
        }
        catch (Exception ex) when ((ex is SocketException or OperationCanceledException) && !stopping.IsCancellationRequested)
        {
            return ex is OperationCanceledException ? $"no answer within {timeout.TotalSeconds:0} s" : ex.Message;
        }
    }

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
