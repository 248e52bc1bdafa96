using System.Net.Http.Headers;
using System.Net.Http.Json;
using Teal.Core.Endpoints;
using Teal.Proxy.Sessions;
using Teal.Server.Json;
using Teal.Server.RemoteProxies;

namespace Teal.Server.ProxyHost;

/// <summary>
/// The proxy's calls to <c>teal serve</c>: heartbeats (answered with the route table), SCRAM
/// verifiers for logins, and leaving. Knows whether the last call got through, so that a login
/// does not wait on a control plane that is down.
/// </summary>
public sealed class ControlPlaneClient : IScramVerifierSource, IDisposable
{
    private readonly HttpClient _http;
    private int _reachable;

    public ControlPlaneClient(Uri server, string token)
    {
        _http = new HttpClient { BaseAddress = server, Timeout = TimeSpan.FromSeconds(5) };
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
    }

    /// <summary>Whether the last heartbeat got an answer.</summary>
    public bool Reachable => Volatile.Read(ref _reachable) == 1;

    public async Task<ProxyRouteTable> HeartbeatAsync(ProxyHeartbeat heartbeat, CancellationToken cancellationToken)
    {
        try
        {
            using var response = await _http.PostAsJsonAsync("/api/proxies/heartbeat", heartbeat, TealJson.Options, cancellationToken);
            response.EnsureSuccessStatusCode();
            var table = await response.Content.ReadFromJsonAsync<ProxyRouteTable>(TealJson.Options, cancellationToken)
                ?? throw new HttpRequestException("the control plane answered the heartbeat with no route table");
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

        using var response = await _http.PostAsJsonAsync("/api/proxies/verifier", new ProxyVerifierRequest(target, role), TealJson.Options, cancellationToken);
        response.EnsureSuccessStatusCode();
        return (await response.Content.ReadFromJsonAsync<ProxyVerifierResponse>(TealJson.Options, cancellationToken))?.Verifier;
    }

    /// <summary>Tells the control plane this proxy is gone for good (its sessions have ended), so switchovers stop expecting it.</summary>
    public async Task LeaveAsync(string name, CancellationToken cancellationToken)
    {
        using var response = await _http.DeleteAsync(new Uri($"/api/proxies/{Uri.EscapeDataString(name)}", UriKind.Relative), cancellationToken);
    }

    public void Dispose() => _http.Dispose();
}
