using System.Net;
using System.Net.Sockets;

namespace Teal.Proxy.Tests.Endpoints;

/// <summary>
/// A TCP relay to a local port that holds each new connection for a while before it relays: a
/// server slow to take a login, so that a test can act while a move's login is still under way.
/// </summary>
internal sealed class DelayedRelay : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;

    private DelayedRelay(int to, TimeSpan delay)
    {
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _accepting = AcceptAsync(to, delay);
    }

    public int Port { get; }

    /// <summary>Connections accepted so far.</summary>
    public int Accepted => Volatile.Read(ref _accepted);

    private int _accepted;

    public static DelayedRelay Start(int to, TimeSpan delay) => new(to, delay);

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await _accepting;
        _stop.Dispose();
    }

    private async Task AcceptAsync(int to, TimeSpan delay)
    {
        var relays = new List<Task>();
        while (true)
        {
            try
            {
                var client = await _listener.AcceptTcpClientAsync(_stop.Token);
                Interlocked.Increment(ref _accepted);
                relays.Add(RelayAsync(client, to, delay));
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                await Task.WhenAll(relays);
                return;
            }
        }
    }

    private async Task RelayAsync(TcpClient client, int to, TimeSpan delay)
    {
        using (client)
        {
            try
            {
                await Task.Delay(delay, _stop.Token);
                using var server = new TcpClient { NoDelay = true };
                await server.ConnectAsync(IPAddress.Loopback, to, _stop.Token);
                client.NoDelay = true;
                using var ended = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                var up = client.GetStream().CopyToAsync(server.GetStream(), ended.Token);
                var down = server.GetStream().CopyToAsync(client.GetStream(), ended.Token);
                await Task.WhenAny(up, down);
                await ended.CancelAsync();
            }
            catch (Exception ex) when (ex is OperationCanceledException or IOException or SocketException or ObjectDisposedException)
            {
                // One side went away: the relay ends with it.
            }
        }
    }
}
