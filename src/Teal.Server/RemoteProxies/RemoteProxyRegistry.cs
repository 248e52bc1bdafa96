using System.Collections.Concurrent;
using System.Net.Http.Headers;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Teal.Core.Secrets;
using Teal.Core.State;
using Teal.Server.Hosting;
using Teal.Server.Json;

namespace Teal.Server.RemoteProxies;

/// <summary>
/// The <c>teal proxy</c> processes that serve this control plane's endpoints: registered by their
/// first heartbeat, dropped (with an event) after <see cref="SilenceLimit"/> without one or when
/// they leave. Kept in <c>proxies.json</c> (names and admin URLs, no secret), so a restarted
/// <c>teal serve</c> drives the proxies it knew before their next heartbeat.
/// </summary>
public sealed partial class RemoteProxyRegistry : IDisposable
{
    private readonly ConcurrentDictionary<string, RegisteredProxy> _proxies = new(StringComparer.Ordinal);
    private readonly IStateStore _state;
    private readonly TimeProvider _time;
    private readonly ILogger<RemoteProxyRegistry> _logger;
    private readonly string _file;
    private readonly Lock _fileLock = new();

    public RemoteProxyRegistry(TealServerOptions options, ServerToken token, IStateStore state, TimeProvider time, ILogger<RemoteProxyRegistry> logger)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(token);
        _state = state;
        _time = time;
        _logger = logger;
        _file = Path.Combine(options.DataDirectory, "proxies.json");
        SilenceLimit = options.ProxySilenceLimit;
        CallTimeout = options.ProxyCallTimeout;
        // The proxies authenticate the control plane's commands with the same token they present.
        // Each call sets its own deadline (a drain runs for its budget).
        Http = new HttpClient { Timeout = Timeout.InfiniteTimeSpan };
        Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token.Value);
        foreach (var known in Load())
        {
            // Each gets a full silence limit from now: they heartbeat within a second once they see us.
            _proxies[known.Name] = new RegisteredProxy(known.Name, known.AdminUrl, time.GetUtcNow(), false, []);
        }
    }

    /// <summary>How long a registered proxy may go without a heartbeat before it is dropped.</summary>
    public TimeSpan SilenceLimit { get; }

    /// <summary>How long a command to a proxy may take beyond its own duration.</summary>
    public TimeSpan CallTimeout { get; }

    /// <summary>Calls to the proxies' admin APIs (bearer token set, bounded timeout).</summary>
    internal HttpClient Http { get; }

    /// <summary>The registered proxies (the silent ones included until they are dropped).</summary>
    public IReadOnlyList<RegisteredProxy> All => [.. _proxies.Values.OrderBy(p => p.Name, StringComparer.Ordinal)];

    /// <summary>Records a heartbeat; the first one of a name (or a new admin URL) registers it with an event.</summary>
    public async Task HeartbeatAsync(ProxyHeartbeat heartbeat, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(heartbeat);
        var now = _time.GetUtcNow();
        var registered = new RegisteredProxy(heartbeat.Name, heartbeat.AdminUrl, now, heartbeat.Draining, heartbeat.Endpoints);
        RegisteredProxy? previous = null;
        _proxies.AddOrUpdate(heartbeat.Name, registered, (_, old) =>
        {
            previous = old;
            return registered;
        });
        if (previous is null || previous.AdminUrl != heartbeat.AdminUrl)
        {
            Save();
            LogRegistered(heartbeat.Name, heartbeat.AdminUrl);
            await _state.AppendEventAsync(null, ProxyEventKinds.Registered, $"teal proxy '{heartbeat.Name}' registered (admin API {heartbeat.AdminUrl})", new Dictionary<string, string> { ["proxy"] = heartbeat.Name, ["adminUrl"] = heartbeat.AdminUrl.ToString() }, cancellationToken);
        }
    }

    /// <summary>A proxy that leaves on purpose (its sessions have ended) is removed at once.</summary>
    public async Task<bool> RemoveAsync(string name, CancellationToken cancellationToken)
    {
        if (!_proxies.TryRemove(name, out _))
        {
            return false;
        }

        Save();
        LogLeft(name);
        await _state.AppendEventAsync(null, ProxyEventKinds.Left, $"teal proxy '{name}' left", new Dictionary<string, string> { ["proxy"] = name }, cancellationToken);
        return true;
    }

    /// <summary>
    /// Drops every proxy silent for longer than <see cref="SilenceLimit"/>, with an event each: a
    /// proxy that is gone for good must not make every switchover roll back. Until then a silent
    /// proxy stays in the set, and a switchover it does not answer rolls back.
    /// </summary>
    public async Task DropSilentAsync(CancellationToken cancellationToken)
    {
        var now = _time.GetUtcNow();
        foreach (var proxy in _proxies.Values)
        {
            var silent = now - proxy.LastSeen;
            if (silent > SilenceLimit && _proxies.TryRemove(new KeyValuePair<string, RegisteredProxy>(proxy.Name, proxy)))
            {
                Save();
                LogDropped(proxy.Name, (long)silent.TotalSeconds);
                await _state.AppendEventAsync(
                    null,
                    ProxyEventKinds.Dropped,
                    $"teal proxy '{proxy.Name}' dropped: no heartbeat for {silent.TotalSeconds:0} s (limit {SilenceLimit.TotalSeconds:0} s); switchovers no longer drive it",
                    new Dictionary<string, string> { ["proxy"] = proxy.Name, ["silentSeconds"] = ((long)silent.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture) },
                    cancellationToken);
            }
        }
    }

    public void Dispose() => Http.Dispose();

    private List<KnownProxy> Load()
    {
        try
        {
            return File.Exists(_file) ? JsonSerializer.Deserialize<List<KnownProxy>>(File.ReadAllText(_file), TealJson.Options) ?? [] : [];
        }
        catch (JsonException ex)
        {
            LogFileUnreadable(_file, ex.Message);
            return [];
        }
    }

    private void Save()
    {
        lock (_fileLock)
        {
            var known = _proxies.Values.Select(p => new KnownProxy(p.Name, p.AdminUrl)).OrderBy(p => p.Name, StringComparer.Ordinal).ToList();
            PrivateFile.Replace(_file, JsonSerializer.Serialize(known, TealJson.Options));
        }
    }

    private sealed record KnownProxy(string Name, Uri AdminUrl);

    [LoggerMessage(EventId = 2400, Level = LogLevel.Information, Message = "teal proxy {Name} registered, admin API {AdminUrl}")]
    private partial void LogRegistered(string name, Uri adminUrl);

    [LoggerMessage(EventId = 2401, Level = LogLevel.Information, Message = "teal proxy {Name} left")]
    private partial void LogLeft(string name);

    [LoggerMessage(EventId = 2402, Level = LogLevel.Warning, Message = "teal proxy {Name} dropped after {SilentSeconds} s without a heartbeat")]
    private partial void LogDropped(string name, long silentSeconds);

    [LoggerMessage(EventId = 2403, Level = LogLevel.Warning, Message = "{File} cannot be read ({Reason}); registered proxies are known again at their next heartbeat")]
    private partial void LogFileUnreadable(string file, string reason);
}

/// <summary>A proxy as its last heartbeat described it.</summary>
public sealed record RegisteredProxy(string Name, Uri AdminUrl, DateTimeOffset LastSeen, bool Draining, IReadOnlyList<ProxyEndpointState> Endpoints);

/// <summary>Events about the proxy processes (no deployment).</summary>
public static class ProxyEventKinds
{
    public const string Registered = "proxy-registered";
    public const string Left = "proxy-left";
    public const string Dropped = "proxy-dropped";
}
