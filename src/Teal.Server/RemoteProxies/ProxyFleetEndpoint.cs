using System.Net;
using System.Net.Http.Json;
using Microsoft.Extensions.Logging;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Core.Instances;
using Teal.Server.Json;

namespace Teal.Server.RemoteProxies;

/// <summary>
/// One declared proxy endpoint as the switchover drives it when <c>teal proxy</c> processes serve
/// it (and, beside them, this server's own listener if it has one): every operation goes to all of
/// them. Pause and drain must succeed everywhere — a proxy that does not answer fails the step, so
/// the switchover rolls back before its point of no return, since that proxy could still send
/// clients to blue. Flip and resume are best effort towards a proxy that does not answer: the
/// switchover is then past the point of no return (or rolling back), and the proxy converges on
/// the route table at its next heartbeat (see <c>ProxyProcess</c>).
/// </summary>
/// <remarks>
/// Each call to a proxy is a round trip inside the write pause, so the switchover's four commands
/// reach a proxy in two: the pause travels with the drain that always follows it (nothing acts on
/// blue in between, and a proxy that cannot be paused fails the drain step, which rolls back the
/// same way), and the flip of a paused proxy travels with the resume (it routes no client until
/// then; if this control plane stops in between, the proxy stays held until the next leader
/// resumes it or its route table does). One more call, logins-open, tells the proxies green's
/// logins are back and where the resume will route, so their moving sessions log in there while
/// green finishes opening; nothing waits for it (<see cref="LoginsOpenAsync(CancellationToken)"/>).
/// Every proxy is driven at once, over the registry's pooled keep-alive connections that
/// <see cref="PrepareAsync"/> opened.
/// </remarks>
public sealed partial class ProxyFleetEndpoint : IEndpoint
{
    private readonly EndpointSpec _spec;
    private readonly IEndpoint? _local;
    private readonly IReadOnlyList<RegisteredProxy> _remotes;
    private readonly RemoteProxyRegistry _registry;
    private readonly ILogger _logger;
    private EndpointTarget _target;
    private IReadOnlyList<EndpointTarget> _targets;
    private TimeSpan? _pendingHold; // the pause not yet sent to the proxies: it goes with the drain
    private bool _pausedHere; // this switchover paused the proxies: a flip can wait for the resume
    private IReadOnlyList<EndpointTarget>? _pendingFlip;

    // Flip and logins-open of one switchover arrive in either order (open-green runs alongside
    // the flip); the proxies are told once both have, under _gate.
    private readonly Lock _gate = new();
    private bool _loginsOpen;
    private bool _loginsOpenSent;

    public ProxyFleetEndpoint(EndpointSpec spec, EndpointTarget target, IEndpoint? local, IReadOnlyList<RegisteredProxy> remotes, RemoteProxyRegistry registry, ILogger logger)
    {
        _spec = spec;
        _target = target;
        _targets = local?.Targets ?? [target];
        _local = local;
        _remotes = remotes;
        _registry = registry;
        _logger = logger;
    }

    public string Name => _spec.Name;

    public EndpointTarget Target => Volatile.Read(ref _target);

    public IReadOnlyList<EndpointTarget> Targets => Volatile.Read(ref _targets);

    public InstanceRole Role => _spec.Role;

    /// <summary>The proxies this endpoint drives (for the API and tests).</summary>
    public IReadOnlyList<string> Proxies => [.. _remotes.Select(r => r.Name)];

    /// <summary>
    /// True whenever a remote proxy is involved: their pause state is only known from heartbeats,
    /// and a resume of an endpoint that is not paused changes nothing.
    /// </summary>
    public bool Paused => _remotes.Count > 0 || _local?.Paused == true;

    public EndpointStats Stats
    {
        get
        {
            var all = _remotes.SelectMany(r => r.Endpoints.Where(e => e.Name == Name).Select(e => e.Stats)).ToList();
            if (_local is not null)
            {
                all.Add(_local.Stats);
            }

            return new EndpointStats(all.Sum(s => s.Active), all.Sum(s => s.Held), all.Sum(s => s.Total), all.Sum(s => s.BytesFromClients), all.Sum(s => s.BytesToClients), all.Sum(s => s.Errors))
            {
                SessionsMoved = all.Sum(s => s.SessionsMoved),
                SessionsClosed = all.Sum(s => s.SessionsClosed),
            };
        }
    }

    /// <summary>
    /// While clients still run: checks every proxy serves the endpoint, and sends each command the
    /// switchover will send to an endpoint name no proxy has (answered 404, changing nothing).
    /// Measured: without it the first switchover through fresh proxies paused writes for seconds,
    /// spent building each admin route's request delegate and JSON contracts on both sides and
    /// opening connections, all inside the write pause. Then each proxy prepares its endpoint as
    /// the local listener does: its sessions read their state ahead of the pause.
    /// </summary>
    public async Task PrepareAsync(TimeSpan holdDeadline, CancellationToken cancellationToken)
    {
        await Task.WhenAll([
            _local?.PrepareAsync(holdDeadline, cancellationToken) ?? Task.CompletedTask,
            .. _remotes.Select(r => WarmUpAsync(r, holdDeadline, cancellationToken))]);
    }

    /// <summary>
    /// The local listener and every <c>teal proxy</c> log their active sessions in on green ahead
    /// of the pause, over green's local socket. A proxy on another machine, or running as another
    /// OS user, is refused there (no socket; peer authentication): its sessions log in once green
    /// opens, as they would without this call, so a failure here is logged and fails nothing.
    /// </summary>
    public Task LogInBeforePauseAsync(EndpointTarget target, string socket, CancellationToken cancellationToken) =>
        Task.WhenAll([
            _local?.LogInBeforePauseAsync(target, socket, cancellationToken) ?? Task.CompletedTask,
            .. _remotes.Select(r => LogInBeforePauseAsync(r, new ProxyLogInBeforePauseRequest(target, socket), cancellationToken))]);

    private async Task LogInBeforePauseAsync(RegisteredProxy proxy, ProxyLogInBeforePauseRequest request, CancellationToken cancellationToken)
    {
        try
        {
            // The proxy watches its sessions' activity for a moment, then waits for their logins.
            await CallAsync<object>(proxy, HttpMethod.Post, "/log-in-before-pause", request, LogInBeforePauseTime, cancellationToken);
        }
        catch (TealException ex)
        {
            LogLogInBeforePauseFailed(Name, proxy.Name, ex.Message);
        }
    }

    /// <summary>What a proxy may spend on log-in-before-pause beyond the call itself: its activity window and its wait for the logins.</summary>
    private static readonly TimeSpan LogInBeforePauseTime = TimeSpan.FromSeconds(2.5);

    private async Task WarmUpAsync(RegisteredProxy proxy, TimeSpan holdDeadline, CancellationToken cancellationToken)
    {
        await CallAsync<object>(proxy, HttpMethod.Get, string.Empty, null, TimeSpan.Zero, cancellationToken);
        var nowhere = $"{Name}~warm-up";
        await CallAsync<EndpointDrainResult>(proxy, HttpMethod.Post, "/drain", new ProxyDrainRequest(1) { HoldSeconds = holdDeadline.TotalSeconds }, TimeSpan.Zero, cancellationToken, nowhere);
        await CallAsync<object>(proxy, HttpMethod.Post, "/logins-open", new ProxyLoginsOpenRequest(Target), TimeSpan.Zero, cancellationToken, nowhere);
        await CallAsync<object>(proxy, HttpMethod.Post, "/log-in-before-pause", new ProxyLogInBeforePauseRequest(Target, "\0teal-warm-up"), TimeSpan.Zero, cancellationToken, nowhere);
        await CallAsync<object>(proxy, HttpMethod.Post, "/resume", new ProxyResumeRequest { Target = Target }, TimeSpan.Zero, cancellationToken, nowhere);

        // Then the proxy's own prepare, as the local listener's: its sessions read their state
        // ahead of the pause (one catalog query each, 7-8 ms of server CPU cold), so the drain
        // inside the pause does not (measured: drain-endpoints 200-310 ms through two proxies
        // without it, against 80-130 ms for the local listener, which always did).
        await CallAsync<object>(proxy, HttpMethod.Post, "/prepare", new ProxyHoldRequest(holdDeadline.TotalSeconds), ReadAheadTime, cancellationToken);
    }

    /// <summary>What a proxy may spend on prepare beyond the call itself: its wait for the sessions' state reads.</summary>
    private static readonly TimeSpan ReadAheadTime = TimeSpan.FromSeconds(1.5);

    /// <summary>Pauses the local listener now; the proxies get the pause with the drain that follows.</summary>
    public async Task PauseAsync(TimeSpan holdDeadline, CancellationToken cancellationToken)
    {
        _pendingHold = holdDeadline;
        if (_local is not null)
        {
            await _local.PauseAsync(holdDeadline, cancellationToken);
        }
    }

    public async Task<EndpointDrainResult> DrainAsync(TimeSpan budget, CancellationToken cancellationToken)
    {
        var request = new ProxyDrainRequest(budget.TotalSeconds) { HoldSeconds = _pendingHold?.TotalSeconds };
        var results = await Task.WhenAll([
            _local?.DrainAsync(budget, cancellationToken) ?? Task.FromResult(new EndpointDrainResult(0, 0)),
            .. _remotes.Select(async r => await CallAsync<EndpointDrainResult>(r, HttpMethod.Post, "/drain", request, budget, cancellationToken) ?? new EndpointDrainResult(0, 0))]);
        if (_pendingHold is not null)
        {
            lock (_gate)
            {
                _pausedHere = true;
                _loginsOpen = false;
                _loginsOpenSent = false;
            }
        }

        _pendingHold = null;
        return new EndpointDrainResult(results.Sum(r => r.ClosedIdle), results.Sum(r => r.ClosedAtDeadline)) { Moving = results.Sum(r => r.Moving) };
    }

    public async Task FlipAsync(EndpointTarget target, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(target);
        Volatile.Write(ref _target, target);
        Volatile.Write(ref _targets, [target]);
        if (_pausedHere)
        {
            // The proxies hold every client until the resume, which carries this target.
            lock (_gate)
            {
                _pendingFlip = [target];
            }

            TellLoginsOpen();
            if (_local is not null)
            {
                await _local.FlipAsync(target, cancellationToken);
            }

            return;
        }

        await Task.WhenAll([
            _local?.FlipAsync(target, cancellationToken) ?? Task.CompletedTask,
            .. _remotes.Select(r => BestEffortAsync(r, "/flip", new ProxyFlipRequest(target), cancellationToken))]);
    }

    /// <summary>
    /// Reader endpoints: the local listener and every <c>teal proxy</c> take every reader in turn
    /// (the request's first target is for a proxy that knows only one).
    /// </summary>
    public async Task FlipAsync(IReadOnlyList<EndpointTarget> targets, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(targets);
        Volatile.Write(ref _target, targets[0]);
        Volatile.Write(ref _targets, [.. targets]);
        if (_pausedHere)
        {
            lock (_gate)
            {
                _pendingFlip = [.. targets];
            }

            TellLoginsOpen();
            if (_local is not null)
            {
                await _local.FlipAsync(targets, cancellationToken);
            }

            return;
        }

        await Task.WhenAll([
            _local?.FlipAsync(targets, cancellationToken) ?? Task.CompletedTask,
            .. _remotes.Select(r => BestEffortAsync(r, "/flip", new ProxyFlipRequest(targets[0]) { Targets = targets.Count > 1 ? [.. targets] : null }, cancellationToken))]);
    }

    /// <summary>
    /// The local listener logs in on green the sessions it moves; every <c>teal proxy</c> this
    /// switchover paused is told with one more call, once the flip has also come (it carries the
    /// target the resume will flip to, which a paused proxy does not have yet). Returns at once.
    /// </summary>
    public Task LoginsOpenAsync(CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            _loginsOpen = true;
        }

        TellLoginsOpen();
        return _local?.LoginsOpenAsync(cancellationToken) ?? Task.CompletedTask;
    }

    /// <summary>
    /// Sends logins-open to every proxy once this pause was flipped (to one target: a reader
    /// endpoint spread over several logs in at the resume, as the local listener does) and
    /// green's logins are back. Not awaited: it runs beside the rest of green's unfence and the
    /// resume does not wait for it. It only lets sessions log in early — the resume still carries
    /// the flip and decides where they go — so a proxy that misses it, fails it or restarts logs
    /// them in at the resume as before, and the switchover only logs the failure.
    /// </summary>
    private void TellLoginsOpen()
    {
        EndpointTarget target;
        lock (_gate)
        {
            if (!_pausedHere || !_loginsOpen || _loginsOpenSent || _pendingFlip is not [var only] || _remotes.Count == 0)
            {
                return;
            }

            _loginsOpenSent = true;
            target = only;
        }

        var request = new ProxyLoginsOpenRequest(target);
        foreach (var proxy in _remotes)
        {
            _ = Task.Run(() => SendLoginsOpenAsync(proxy, request));
        }
    }

    private async Task SendLoginsOpenAsync(RegisteredProxy proxy, ProxyLoginsOpenRequest request)
    {
        try
        {
            // Its own deadline (the registry's call timeout), not the step's token: open-green
            // does not wait for it, and a call past the resume changes nothing on the proxy.
            await CallAsync<object>(proxy, HttpMethod.Post, "/logins-open", request, TimeSpan.Zero, CancellationToken.None);
        }
        catch (TealException ex)
        {
            LogLoginsOpenFailed(Name, proxy.Name, ex.Message);
        }
        catch (ObjectDisposedException)
        {
            // Teal is stopping (the registry's client is gone): the next leader resumes the proxies.
        }
    }

    /// <summary>Resumes everywhere; a flip held back for the resume goes with it.</summary>
    public async Task ResumeAsync(CancellationToken cancellationToken)
    {
        IReadOnlyList<EndpointTarget>? pending;
        lock (_gate)
        {
            pending = _pendingFlip;
            _pendingFlip = null;
            _pausedHere = false;
            _loginsOpen = false;
        }

        var request = new ProxyResumeRequest { Target = pending?[0], Targets = pending is { Count: > 1 } ? pending : null };
        _pendingHold = null;
        await Task.WhenAll([
            _local?.ResumeAsync(cancellationToken) ?? Task.CompletedTask,
            .. _remotes.Select(r => BestEffortAsync(r, "/resume", request, cancellationToken))]);
    }

    private async Task BestEffortAsync(RegisteredProxy proxy, string action, object? body, CancellationToken cancellationToken)
    {
        try
        {
            await CallAsync<object>(proxy, HttpMethod.Post, action, body, TimeSpan.Zero, cancellationToken);
        }
        catch (TealException ex)
        {
            LogBestEffortFailed(Name, proxy.Name, action.TrimStart('/'), ex.Message);
        }
    }

    /// <summary>
    /// One admin call; a proxy that does not serve this endpoint (404) has nothing to do. Any
    /// other failure is a <see cref="TealException"/> naming the proxy and the fix.
    /// </summary>
    private async Task<T?> CallAsync<T>(RegisteredProxy proxy, HttpMethod method, string action, object? body, TimeSpan duration, CancellationToken cancellationToken, string? endpoint = null)
        where T : class
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(duration + _registry.CallTimeout);
        var uri = new Uri(proxy.AdminUrl, $"/proxy/endpoints/{Uri.EscapeDataString(endpoint ?? Name)}{action}");
        try
        {
            using var request = new HttpRequestMessage(method, uri);
            if (method == HttpMethod.Post)
            {
                request.Content = JsonContent.Create(body ?? new { }, options: TealJson.Options);
            }

            using var response = await _registry.Http.SendAsync(request, deadline.Token);
            if (response.StatusCode == HttpStatusCode.NotFound)
            {
                return null;
            }

            if (!response.IsSuccessStatusCode)
            {
                throw Unreachable(proxy, action, $"it answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(deadline.Token)}", null);
            }

            return typeof(T) == typeof(object) ? null : await response.Content.ReadFromJsonAsync<T>(TealJson.Options, deadline.Token);
        }
        catch (Exception ex) when (ex is HttpRequestException or System.Text.Json.JsonException || ex is OperationCanceledException && !cancellationToken.IsCancellationRequested)
        {
            throw Unreachable(proxy, action, ex is OperationCanceledException ? $"no answer within {(duration + _registry.CallTimeout).TotalSeconds:0.#} s" : ex.Message, ex);
        }
    }

    private TealException Unreachable(RegisteredProxy proxy, string action, string reason, Exception? inner) => new(
        "endpoint.proxy-unreachable",
        $"teal proxy '{proxy.Name}' ({proxy.AdminUrl}) did not {(action.Length == 0 ? "answer" : action.TrimStart('/'))} endpoint '{Name}': {reason}",
        $"start that proxy again, or remove it for good with `DELETE /api/proxies/{proxy.Name}` (it is dropped by itself after {_registry.SilenceLimit.TotalSeconds:0} s without a heartbeat); then retry",
        inner);

    [LoggerMessage(EventId = 2405, Level = LogLevel.Warning, Message = "Endpoint {Name}: teal proxy {Proxy} did not take logins-open ({Reason}); its moving sessions log in on green at the resume")]
    private partial void LogLoginsOpenFailed(string name, string proxy, string reason);

    [LoggerMessage(EventId = 2406, Level = LogLevel.Information, Message = "Endpoint {Name}: teal proxy {Proxy} did not log its sessions in on green before the pause ({Reason}); they log in once green opens")]
    private partial void LogLogInBeforePauseFailed(string name, string proxy, string reason);

    [LoggerMessage(EventId = 2404, Level = LogLevel.Warning, Message = "Endpoint {Name}: teal proxy {Proxy} did not take {Action} ({Reason}); it follows the route table at its next heartbeat")]
    private partial void LogBestEffortFailed(string name, string proxy, string action, string reason);
}
