using System.Collections.Concurrent;
using System.Diagnostics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Proxy.Endpoints;
using Teal.Server.Api;
using Teal.Proxy.Hosting;
using Teal.Server.Hosting;
using Teal.Server.Json;
using Teal.Server.RemoteProxies;

namespace Teal.Server.ProxyHost;

/// <summary>
/// <c>teal proxy</c>: Teal's proxy endpoints in a process of their own, so that the control plane
/// can stop, crash or be upgraded without closing a client connection. It serves the route table
/// the control plane sends with each heartbeat answer (kept in a local file, so it also starts
/// serving without the control plane), and takes the switchover's commands over a small admin
/// API authenticated with the control plane's token. Listeners use SO_REUSEPORT, so a new
/// <c>teal proxy</c> can listen beside this one while it drains (<see cref="DrainAsync"/>).
/// </summary>
public sealed partial class ProxyProcess : IAsyncDisposable
{
    private readonly ProxyProcessOptions _options;
    private readonly ControlPlaneClient _control;
    private readonly ProxyManager _proxies;
    private readonly WebApplication _admin;
    private readonly ILogger _logger;
    private readonly ConcurrentDictionary<string, EndpointControl> _controls = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stop = new();
    private readonly SemaphoreSlim _applying = new(1, 1);
    private ProxyRouteTable? _saved;
    private Task? _heartbeats;
    private volatile bool _draining;

    private ProxyProcess(ProxyProcessOptions options, ControlPlaneClient control, ProxyManager proxies, WebApplication admin, ILogger logger)
    {
        _options = options;
        _control = control;
        _proxies = proxies;
        _admin = admin;
        _logger = logger;
    }

    /// <summary>Where the admin API answers (the port chosen when 0 was asked for).</summary>
    public Uri AdminUrl { get; private set; } = new("http://127.0.0.1/");

    /// <summary>Whether SIGTERM (or <see cref="DrainAsync"/>) stopped the accepting.</summary>
    public bool Draining => _draining;

    /// <summary>Starts the admin API, serves the route file's endpoints at once, then follows the control plane.</summary>
    public static async Task<ProxyProcess> StartAsync(ProxyProcessOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        var listen = TealServerOptions.ParseAddress(options.AdminListen, "admin");
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(listen));
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(console =>
        {
            console.SingleLine = true;
            console.TimestampFormat = "HH:mm:ss ";
        });
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        builder.Services.ConfigureHttpJsonOptions(json => TealJson.Configure(json.SerializerOptions));
        // Signals are the proxy's to handle (SIGTERM drains, it does not stop the admin API).
        builder.Services.AddSingleton<IHostLifetime, ManualLifetime>();
        var app = builder.Build();

        var loggerFactory = app.Services.GetRequiredService<ILoggerFactory>();
        var control = new ControlPlaneClient(options.Servers, options.Token);
        // The certificate is generated beside the route file at first start: the directory may not exist yet.
        Directory.CreateDirectory(options.CertificateDirectory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var proxyOptions = new ProxyOptions
        {
            Certificate = Teal.Proxy.Tls.ProxyCertificate.LoadOrCreate(options.CertificateDirectory),
            ReusePort = true,
        };
        var proxies = new ProxyManager(proxyOptions, loggerFactory, TimeProvider.System, resolver: null, verifiers: control);
        var process = new ProxyProcess(options, control, proxies, app, loggerFactory.CreateLogger<ProxyProcess>());
        var token = new ServerToken(options.Token);
        app.Use(async (context, next) =>
        {
            var header = context.Request.Headers.Authorization.ToString();
            var presented = header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header["Bearer ".Length..].Trim() : null;
            if (!token.Matches(presented))
            {
                context.Response.StatusCode = StatusCodes.Status401Unauthorized;
                return;
            }

            await next(context);
        });
        process.MapRoutes(app);
        await app.StartAsync(cancellationToken);
        process.AdminUrl = TealServer.BoundAddress(app);

        // Serve at once with the last routes known: the control plane may be down right now.
        if (RouteFile.Load(options.StateFile) is { } last)
        {
            process._saved = last;
            await process.ApplyAsync(last, sentAt: null, cancellationToken);
            LogServingFromFile(process._logger, last.Endpoints.Count, options.StateFile);
        }

        process._heartbeats = Task.Run(() => process.HeartbeatLoopAsync(process._stop.Token), CancellationToken.None);
        CodeWarmUp.StartForProxy(process._logger);
        return process;
    }

    /// <summary>The endpoints this process serves now.</summary>
    public IReadOnlyList<ProxyEndpointState> Endpoints =>
        [.. _proxies.All.OrderBy(e => e.Name, StringComparer.Ordinal).Select(e => new ProxyEndpointState(e.Name, e.Target, e.Paused, e.Accepting, e.Stats))];

    /// <summary>
    /// SIGTERM: stop accepting (a replacement listens on the same addresses), keep every
    /// established and held session and keep obeying the control plane, until the sessions have
    /// ended or <see cref="ProxyProcessOptions.DrainTimeout"/> is spent (or <paramref name="hardStop"/>).
    /// </summary>
    public async Task DrainAsync(CancellationToken hardStop)
    {
        _draining = true;
        foreach (var endpoint in _proxies.All)
        {
            await endpoint.StopAcceptingAsync();
        }

        var open = _proxies.All.Sum(e => e.OpenConnections);
        LogDraining(_logger, open, (long)_options.DrainTimeout.TotalSeconds);
        var deadline = Stopwatch.StartNew();
        try
        {
            while (_proxies.All.Sum(e => e.OpenConnections) > 0 && deadline.Elapsed < _options.DrainTimeout)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(200), hardStop);
            }
        }
        catch (OperationCanceledException) when (hardStop.IsCancellationRequested)
        {
            // A second signal: stop now.
        }

        var left = _proxies.All.Sum(e => e.OpenConnections);
        LogDrained(_logger, left);
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        if (_heartbeats is not null)
        {
            await _heartbeats;
        }

        if (_draining)
        {
            // Gone for good: switchovers must not wait for this proxy any more.
            try
            {
                using var leave = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                await _control.LeaveAsync(_options.Name, leave.Token);
            }
            catch (Exception ex) when (ex is HttpRequestException or OperationCanceledException)
            {
                LogLeaveFailed(_logger, ex.Message);
            }
        }

        await _proxies.DisposeAsync();
        await _admin.StopAsync(CancellationToken.None);
        await _admin.DisposeAsync();
        _control.Dispose();
        _stop.Dispose();
        _applying.Dispose();
    }

    private void MapRoutes(WebApplication app)
    {
        var group = app.MapGroup("/proxy/endpoints");
        group.MapGet("/", () => Endpoints);
        group.MapGet("/{name}", (string name) => _proxies.Get(name) is { } e ? Results.Ok(new ProxyEndpointState(e.Name, e.Target, e.Paused, e.Accepting, e.Stats)) : Results.NotFound());
        group.MapPost("/{name}/pause", (string name, ProxyHoldRequest request, CancellationToken ct) =>
            CommandAsync(name, async e =>
            {
                await e.PauseAsync(TimeSpan.FromSeconds(request.HoldSeconds), ct);
                return null;
            }));
        group.MapPost("/{name}/drain", (string name, ProxyDrainRequest request, CancellationToken ct) =>
            CommandAsync(name, async e =>
            {
                if (request.HoldSeconds is { } hold)
                {
                    await e.PauseAsync(TimeSpan.FromSeconds(hold), ct);
                }

                return await e.DrainAsync(TimeSpan.FromSeconds(request.BudgetSeconds), ct);
            }));
        group.MapPost("/{name}/flip", (string name, ProxyFlipRequest request, CancellationToken ct) =>
            CommandAsync(name, async e =>
            {
                await (request.Targets is { Count: > 1 } targets ? e.FlipAsync(targets, ct) : e.FlipAsync(request.Target, ct));
                return null;
            }));
        group.MapPost("/{name}/logins-open", (string name, ProxyLoginsOpenRequest? request, CancellationToken ct) =>
            LoginsOpenRefusal(request) is { } refusal
                ? Task.FromResult(Results.Json(ApiErrors.Problem(refusal), TealJson.Options, "application/problem+json", StatusCodes.Status400BadRequest))
                : CommandAsync(name, async e =>
                {
                    await e.LoginsOpenAsync(request!.Target, ct); // LoginsOpenRefusal refused a request without a target.
                    return null;
                }));
        group.MapPost("/{name}/prepare", async (string name, ProxyHoldRequest request, CancellationToken ct) =>
        {
            // Before the pause: the sessions read their state now, so the drain need not. Like a
            // login ahead, it changes neither route nor pause (not a CommandAsync).
            if (_proxies.Get(name) is not { } endpoint)
            {
                return Results.NotFound();
            }

            await endpoint.PrepareAsync(TimeSpan.FromSeconds(request.HoldSeconds), ct);
            return Results.NoContent();
        });
        group.MapPost("/{name}/log-in-before-pause", async (string name, ProxyLogInBeforePauseRequest? request, CancellationToken ct) =>
        {
            if (LogInBeforePauseRefusal(request) is { } refusal)
            {
                return Results.Json(ApiErrors.Problem(refusal), TealJson.Options, "application/problem+json", StatusCodes.Status400BadRequest);
            }

            // Not a command on the route (CommandAsync): a login ahead changes neither route nor
            // pause, so a route table the heartbeat fetched meanwhile still applies.
            if (_proxies.Get(name) is not { } endpoint)
            {
                return Results.NotFound();
            }

            await endpoint.LogInBeforePauseAsync(request!.Target, request.Socket, ct); // refused above without them
            return Results.NoContent();
        });
        group.MapPost("/{name}/resume", (string name, ProxyResumeRequest request, CancellationToken ct) =>
            CommandAsync(name, async e =>
            {
                if (request.Targets is { Count: > 1 } targets)
                {
                    await e.FlipAsync(targets, ct);
                }
                else if (request.Target is { } target)
                {
                    await e.FlipAsync(target, ct);
                }

                await e.ResumeAsync(ct);
                return null;
            }));
    }

    /// <summary>
    /// Why a logins-open request cannot be taken, or null. The target becomes a server the proxy
    /// logs clients in to, so one that names no server is refused rather than tried.
    /// </summary>
    internal static TealException? LoginsOpenRefusal(ProxyLoginsOpenRequest? request) =>
        TargetRefusal("logins-open", request?.Target, "send {\"target\": {\"instance\", \"host\", \"port\", \"database\"}}: the target the resume will route to");

    /// <summary>
    /// Why a log-in-before-pause request cannot be taken, or null: besides the target (as for
    /// logins-open), the socket must be a Unix socket's path — absolute, or abstract (a NUL first,
    /// as .NET names one).
    /// </summary>
    internal static TealException? LogInBeforePauseRefusal(ProxyLogInBeforePauseRequest? request)
    {
        const string Hint = "send {\"target\": {\"instance\", \"host\", \"port\", \"database\"}, \"socket\": \"/dir/.s.PGSQL.PORT\"}: green and its local socket (an abstract one starts with \\u0000)";
        if (TargetRefusal("log-in-before-pause", request?.Target, Hint) is { } refusal)
        {
            return refusal;
        }

        return request!.Socket switch // TargetRefusal refused a request without a target
        {
            null or "" => new TealException("proxy.request-invalid", "log-in-before-pause needs green's local socket", Hint),
            var socket when socket[0] is not ('/' or '\0') || socket.Length > 107 || socket.IndexOf('\0', 1) >= 0 =>
                new TealException("proxy.request-invalid", "log-in-before-pause socket must be a Unix socket's path: absolute, or abstract (its first character NUL), at most 107 bytes", Hint),
            _ => null,
        };
    }

    private static TealException? TargetRefusal(string action, EndpointTarget? target, string hint) => target switch
    {
        null => new TealException("proxy.request-invalid", $"{action} needs the target the endpoint is to resume to", hint),
        { Host: null or "" } or { Instance: null or "" } or { Database: null or "" } =>
            new TealException("proxy.request-invalid", $"{action} needs the target's instance, host and database", hint),
        { Port: < 1 or > 65535 } => new TealException("proxy.request-invalid", $"{action} target port {target.Port} is not a TCP port", hint),
        _ => null,
    };

    /// <summary>
    /// Runs a command of the control plane on one endpoint. Its time is recorded, so that a route
    /// table older than the command (asked for before it arrived) does not undo it.
    /// </summary>
    private async Task<IResult> CommandAsync(string name, Func<ProxyEndpoint, Task<object?>> action)
    {
        if (_proxies.Get(name) is not { } endpoint)
        {
            return Results.NotFound();
        }

        var control = _controls.GetOrAdd(name, _ => new EndpointControl());
        control.Begin();
        try
        {
            var result = await action(endpoint);
            return result is null ? Results.NoContent() : Results.Ok(result);
        }
        finally
        {
            control.End();
        }
    }

    private async Task HeartbeatLoopAsync(CancellationToken stop)
    {
        // The control plane that answered last (null: none did yet, or the last heartbeat found none).
        var answering = (Uri?)null;
        var reachable = (bool?)null;
        while (!stop.IsCancellationRequested)
        {
            var sentAt = Stopwatch.GetTimestamp();
            try
            {
                var table = await _control.HeartbeatAsync(new ProxyHeartbeat(_options.Name, AdminUrl) { Endpoints = Endpoints, Draining = _draining }, stop);
                if (reachable != true || answering != _control.Current)
                {
                    LogControlPlaneReachable(_logger, _control.Current, table.Endpoints.Count);
                    reachable = true;
                    answering = _control.Current;
                }

                await ApplyAsync(table, sentAt, stop);
                if (!RouteFile.SameRoutes(_saved, table))
                {
                    RouteFile.Save(_options.StateFile, table);
                    _saved = table;
                }
            }
            catch (Exception ex) when (ex is HttpRequestException or System.Text.Json.JsonException or IOException || ex is OperationCanceledException && !stop.IsCancellationRequested)
            {
                if (reachable != false)
                {
                    LogControlPlaneUnreachable(_logger, string.Join(", ", _options.Servers), ex.Message);
                    reachable = false;
                    answering = null;
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }

            try
            {
                await Task.Delay(_options.HeartbeatInterval, stop);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }
    }

    /// <summary>
    /// Converges on a route table: new endpoints start, removed ones stop, and the route, canary
    /// and pause of the others follow the table — but only where no command of the control plane
    /// arrived since the table was asked for (<paramref name="sentAt"/>), so a table computed
    /// before a flip never flips back. An endpoint paused by a switchover that the table no longer
    /// holds resumes: the switchover ended while this proxy did not hear its resume. From the route
    /// file (<paramref name="sentAt"/> null) only starts happen.
    /// </summary>
    private async Task ApplyAsync(ProxyRouteTable table, long? sentAt, CancellationToken cancellationToken)
    {
        await _applying.WaitAsync(cancellationToken);
        try
        {
            var wanted = table.Endpoints.ToDictionary(e => e.Spec.Name, StringComparer.Ordinal);
            if (sentAt is not null)
            {
                foreach (var running in _proxies.All.Where(e => !wanted.ContainsKey(e.Name)))
                {
                    await _proxies.StopAsync(running.Name);
                    _controls.TryRemove(running.Name, out _);
                    LogRemoved(_logger, running.Name);
                }
            }

            foreach (var entry in table.Endpoints)
            {
                if (_proxies.Get(entry.Spec.Name) is not { } endpoint)
                {
                    if (!_draining)
                    {
                        await StartEndpointAsync(entry, cancellationToken);
                    }
                }
                else if (sentAt is { } asked && _controls.GetOrAdd(entry.Spec.Name, _ => new EndpointControl()).QuietSince(asked))
                {
                    await ConvergeAsync(endpoint, entry, cancellationToken);
                }
            }
        }
        finally
        {
            _applying.Release();
        }
    }

    private async Task StartEndpointAsync(ProxyRouteEntry entry, CancellationToken cancellationToken)
    {
        try
        {
            // The canary comes resolved in the table: the proxy has no state store to resolve it.
            var hold = entry.Held ? _options.HoldAtStart : (TimeSpan?)null;
            var listen = _options.ListenOverrides.GetValueOrDefault(entry.Spec.Name) ?? entry.Spec.Listen;
            var endpoint = await _proxies.StartAsync(entry.Spec with { CanaryInstance = null, CanaryPercent = 0, Listen = listen }, entry.Target, cancellationToken, hold, entry.Protocol);
            if (entry.Targets.Count > 1)
            {
                await endpoint.FlipAsync(entry.Targets, cancellationToken);
            }

            if (entry.CanaryTargets.Count > 0)
            {
                await endpoint.SetCanaryAsync(entry.CanaryTargets, entry.CanaryPercent, cancellationToken);
            }

            LogServing(_logger, entry.Spec.Name, endpoint.LocalEndPoint, entry.Target, entry.Held);
        }
        catch (TealException ex)
        {
            LogStartFailed(_logger, entry.Spec.Name, ex.Message);
        }
    }

    private async Task ConvergeAsync(ProxyEndpoint endpoint, ProxyRouteEntry entry, CancellationToken cancellationToken)
    {
        if (endpoint.Paused && entry.Held)
        {
            return;
        }

        // A reader endpoint's list changes when a reader stops or starts streaming.
        if (!endpoint.Targets.SequenceEqual(entry.Targets))
        {
            await endpoint.FlipAsync(entry.Targets, cancellationToken);
        }

        // The canary's readers change as green's readers stop or start streaming.
        var (canaries, percent) = endpoint.Canary;
        if (!canaries.SequenceEqual(entry.CanaryTargets) || percent != entry.CanaryPercent)
        {
            await endpoint.SetCanaryAsync(entry.CanaryTargets, entry.CanaryPercent, cancellationToken);
        }

        if (endpoint.Paused)
        {
            await endpoint.ResumeAsync(cancellationToken);
            LogResumedByTable(_logger, endpoint.Name, entry.Target);
        }
    }

    /// <summary>When the control plane last commanded an endpoint, and whether a command is running.</summary>
    private sealed class EndpointControl
    {
        private readonly Lock _gate = new();
        private long _lastCommand;
        private int _inFlight;

        public void Begin()
        {
            lock (_gate)
            {
                _inFlight++;
                _lastCommand = Stopwatch.GetTimestamp();
            }
        }

        public void End()
        {
            lock (_gate)
            {
                _inFlight--;
                _lastCommand = Stopwatch.GetTimestamp();
            }
        }

        /// <summary>No command running, and none since <paramref name="timestamp"/>.</summary>
        public bool QuietSince(long timestamp)
        {
            lock (_gate)
            {
                return _inFlight == 0 && _lastCommand < timestamp;
            }
        }
    }

    /// <summary>A host lifetime that leaves signals alone: the proxy decides what SIGTERM means.</summary>
    private sealed class ManualLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    [LoggerMessage(EventId = 2450, Level = LogLevel.Information, Message = "Serving {Count} endpoint(s) from the last route table in {File} until the control plane answers")]
    private static partial void LogServingFromFile(ILogger logger, int count, string file);

    [LoggerMessage(EventId = 2451, Level = LogLevel.Information, Message = "Control plane {Server} answers; its route table has {Count} endpoint(s)")]
    private static partial void LogControlPlaneReachable(ILogger logger, Uri server, int count);

    [LoggerMessage(EventId = 2452, Level = LogLevel.Warning, Message = "No control plane answers as leader ({Servers}: {Reason}); serving with the last routes")]
    private static partial void LogControlPlaneUnreachable(ILogger logger, string servers, string reason);

    [LoggerMessage(EventId = 2453, Level = LogLevel.Information, Message = "Endpoint {Name} listens on {Listen} -> {Target} (held: {Held})")]
    private static partial void LogServing(ILogger logger, string name, System.Net.IPEndPoint listen, Teal.Core.Endpoints.EndpointTarget target, bool held);

    [LoggerMessage(EventId = 2454, Level = LogLevel.Warning, Message = "Endpoint {Name} did not start: {Reason}")]
    private static partial void LogStartFailed(ILogger logger, string name, string reason);

    [LoggerMessage(EventId = 2455, Level = LogLevel.Information, Message = "Endpoint {Name} is no longer declared; stopped")]
    private static partial void LogRemoved(ILogger logger, string name);

    [LoggerMessage(EventId = 2456, Level = LogLevel.Warning, Message = "Endpoint {Name} resumed by the route table (to {Target}): the switchover that paused it has ended")]
    private static partial void LogResumedByTable(ILogger logger, string name, Teal.Core.Endpoints.EndpointTarget target);

    [LoggerMessage(EventId = 2457, Level = LogLevel.Information, Message = "Draining: no new connections accepted; {Open} open connection(s) may run on for up to {TimeoutSeconds} s")]
    private static partial void LogDraining(ILogger logger, int open, long timeoutSeconds);

    [LoggerMessage(EventId = 2458, Level = LogLevel.Information, Message = "Drained; {Open} connection(s) left are closed")]
    private static partial void LogDrained(ILogger logger, int open);

    [LoggerMessage(EventId = 2459, Level = LogLevel.Warning, Message = "Could not tell the control plane this proxy left ({Reason}); it drops the proxy after its silence limit")]
    private static partial void LogLeaveFailed(ILogger logger, string reason);
}
