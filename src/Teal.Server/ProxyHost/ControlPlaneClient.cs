using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using Teal.Core.Endpoints;
using Teal.Proxy.Sessions;
using Teal.Server.Json;
using Teal.Server.RemoteProxies;

namespace Teal.Server.ProxyHost;

/// <summary>
/// The proxy's calls to <c>teal serve</c>: heartbeats (answered with the route table), SCRAM
/// verifiers for logins, and leaving. Given several control planes (one leader and its standbys
/// on a shared state store), it talks to the one that answered last and moves on to the next when
/// that one refuses the connection, times out or answers 503 (a standby: <c>server.not-leader</c>,
/// or no leader yet). Knows whether the last call got through, so that a login does not wait on a
/// control plane that is down.
/// </summary>
public sealed class ControlPlaneClient : IScramVerifierSource, IDisposable
{
    private readonly HttpClient _http;
    private readonly IReadOnlyList<Uri> _servers;
    private int _current;
    private int _reachable;

    public ControlPlaneClient(IReadOnlyList<Uri> servers, string token)
    {
        ArgumentNullException.ThrowIfNull(servers);
        if (servers.Count == 0)
        {
            throw new ArgumentException("at least one control plane is needed", nameof(servers));
        }

        _servers = servers;
        // One client for all control planes: each keeps its own pooled keep-alive connections.
        _http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
    }

    /// <summary>Whether the last heartbeat got an answer.</summary>
    public bool Reachable => Volatile.Read(ref _reachable) == 1;

    /// <summary>The control plane this proxy talks to now (the one that answered last).</summary>
    public Uri Current => _servers[Volatile.Read(ref _current)];

    /// <summary>
    /// Sends the heartbeat to the current control plane, then to each other one in turn until one
    /// answers as leader. Throws (the last failure) when none does: the proxy keeps its routes.
    /// </summary>
    public async Task<ProxyRouteTable> HeartbeatAsync(ProxyHeartbeat heartbeat, CancellationToken cancellationToken)
    {
        try
        {
            var table = await OnLeaderAsync(
                async (server, ct) =>
                {
                    using var response = await _http.PostAsJsonAsync(new Uri(server, "/api/proxies/heartbeat"), heartbeat, TealJson.Options, ct);
                    EnsureLeader(server, response);
                    return await response.Content.ReadFromJsonAsync<ProxyRouteTable>(TealJson.Options, ct)
                        ?? throw new HttpRequestException("the control plane answered the heartbeat with no route table");
                },
                cancellationToken);
            Volatile.Write(ref _reachable, 1);
            return table;
        }
        catch
        {
            Volatile.Write(ref _reachable, 0);
            throw;
        }
    }

    /// <summary>
    /// The auth query, asked of the control plane (which reads it with Teal's control login): the
    /// verifier stays in this process's memory. Null at once when the control plane is down — the
    /// login then goes to the server, which checks the password itself — or when the role has none.
    /// </summary>
    public async Task<string?> ReadAsync(EndpointTarget target, string role, CancellationToken cancellationToken)
    {
        if (!Reachable)
        {
            return null;
        }

        // The leader the last heartbeat reached; a login does not go round the control planes.
        using var response = await _http.PostAsJsonAsync(new Uri(Current, "/api/proxies/verifier"), new ProxyVerifierRequest(target, role), TealJson.Options, cancellationToken);
        response.EnsureSuccessStatusCode();
        return (await response.Content.ReadFromJsonAsync<ProxyVerifierResponse>(TealJson.Options, cancellationToken))?.Verifier;
    }

    /// <summary>Tells the control plane this proxy is gone for good (its sessions have ended), so switchovers stop expecting it.</summary>
    public async Task LeaveAsync(string name, CancellationToken cancellationToken)
    {
        await OnLeaderAsync(
            async (server, ct) =>
            {
                using var response = await _http.DeleteAsync(new Uri(server, $"/api/proxies/{Uri.EscapeDataString(name)}"), ct);
                EnsureLeader(server, response);
                return true;
            },
            cancellationToken);
    }

    public void Dispose() => _http.Dispose();

    /// <summary>A standby answers 503; anything else but success is a failure of this control plane too.</summary>
    private static void EnsureLeader(Uri server, HttpResponseMessage response)
    {
        if (response.StatusCode == HttpStatusCode.ServiceUnavailable)
        {
            throw new HttpRequestException($"{server} is a standby (503)", null, response.StatusCode);
        }

        response.EnsureSuccessStatusCode();
    }

    /// <summary>
    /// Runs <paramref name="call"/> against the current control plane, then the others in order;
    /// the first that succeeds becomes current. A timeout of one control plane (not the caller's
    /// cancellation) counts as a failure of that one.
    /// </summary>
    private async Task<T> OnLeaderAsync<T>(Func<Uri, CancellationToken, Task<T>> call, CancellationToken cancellationToken)
    {
        var start = Volatile.Read(ref _current);
        Exception? last = null;
        for (var i = 0; i < _servers.Count; i++)
        {
            var index = (start + i) % _servers.Count;
            try
            {
                var result = await call(_servers[index], cancellationToken);
                Volatile.Write(ref _current, index);
                return result;
            }
            catch (Exception ex) when (ex is HttpRequestException or System.Text.Json.JsonException or IOException || ex is OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                last = _servers.Count == 1 ? ex : new HttpRequestException($"{_servers[index]}: {ex.Message}", ex);
            }
        }

        throw last!; // The loop ran at least once and failed each time.
    }
}
