using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Proxy.MySql;
using Teal.Proxy.Protocol;
using Teal.Proxy.Sessions;
using Teal.Proxy.Tls;

namespace Teal.Proxy.Endpoints;

/// <summary>
/// Teal's own endpoint: a TCP listener that proxies PostgreSQL connections (or MySQL-protocol
/// ones, <see cref="ProxyProtocol.MySql"/>) to the instance its route names, and can hold new
/// connections, drain existing ones at transaction boundaries, flip the route and resume — the
/// four moves of a switchover.
/// </summary>
public sealed class ProxyEndpoint : IEndpoint, IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly ProxyOptions _options;
    private readonly ILogger _logger;
    private readonly TimeProvider _timeProvider;
    private readonly CancellationTokenSource _stopping = new();
    private readonly ConcurrentDictionary<long, IEndpointConnection> _connections = new();
    private readonly ConcurrentDictionary<ulong, (EndpointTarget Target, ulong ServerKey)> _backendKeys = new();
    private readonly IScramVerifierSource? _verifiers;

    // Verifiers read for moved sessions, per target and role; cleared at each drain, so a
    // password changed between switchovers is read again.
    private ConcurrentDictionary<(EndpointTarget Target, string Role), Task<ScramVerifier?>> _verifierCache = new();
    private readonly ConcurrentDictionary<(EndpointTarget Target, string Role), Task<ScramVerifier?>> _loginReads = new();
    private readonly Task _acceptLoop;

    // Admission and pause change together under _gate, so that once PauseAsync returns no
    // connection can still slip through to the route it is about to leave.
    private readonly Lock _gate = new();

    // Moving sessions whose client sent something while held and that have not logged in on the
    // new server yet. Idle ones log in after them (see ProxyConnection.MoveCoreAsync). Its own lock:
    // taken under a connection's, never the other way round.
    private readonly Lock _waitingGate = new();
    private int _waitingMoves;
    private TaskCompletionSource _noWaitingMoves = Completed();
    private TaskCompletionSource? _resumed;
    private TimeSpan _holdDeadline;

    // Per pause, under _gate: moving sessions may log in on the new route before the resume once
    // the endpoint was flipped during this pause and the switchover said logins there are back
    // (LoginsOpenAsync). Completed with that target, or with null at the resume.
    private TaskCompletionSource<EndpointTarget?>? _loginAhead;
    private bool _flippedWhilePaused;
    private bool _loginsOpen;

    private ProxyRoute _route;
    private long _nextConnectionId;
    private long _routed;
    private long _active;
    private long _held;
    private long _total;
    private long _bytesFromClients;
    private long _bytesToClients;
    private long _errors;
    private long _sessionsMoved;
    private long _sessions; // connections counted against the cap: from startup packet to end
    private long _sessionsClosed;
    private int _disposed;
    private int _acceptStopped;

    private ProxyEndpoint(string name, Socket listener, EndpointTarget target, ProxyOptions options, ILogger logger, TimeProvider timeProvider, TimeSpan? holdDeadline, IScramVerifierSource? verifiers, ProxyProtocol protocol)
    {
        _verifiers = verifiers;
        Protocol = protocol;
        if (holdDeadline is { } hold)
        {
            // Paused before the first accept: not one connection can be admitted before the pause.
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(hold, TimeSpan.Zero);
            _holdDeadline = hold;
            _resumed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _loginAhead = new TaskCompletionSource<EndpointTarget?>(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        Name = name;
        _listener = listener;
        _options = options;
        _logger = logger;
        _timeProvider = timeProvider;
        _route = new ProxyRoute(target, null, 0);
        Plaintext = new PlaintextServers(timeProvider);
        LocalEndPoint = (IPEndPoint)listener.LocalEndPoint!; // A bound socket always has one.
        TooManyError = PostgresWire.FatalError(PostgresWire.TooManyConnections, $"Teal endpoint {name} has reached its limit of {options.MaxConnections} connections");
        PausedError = PostgresWire.FatalError(PostgresWire.CannotConnectNow, $"Teal endpoint {name} is paused for a switchover; retry");
        DrainError = PostgresWire.FatalError(PostgresWire.AdminShutdown, $"Teal endpoint {name} closed this connection between transactions for a switchover; reconnect");
        LoginDrainError = PostgresWire.FatalError(PostgresWire.AdminShutdown, $"Teal endpoint {name} closed this connection during login for a switchover; reconnect");
        // A cut connection's client is told whether its transaction's fate is known: with nothing
        // of its own on the server (idle in a transaction), the closed backend rolls it back; with a
        // statement under way, a COMMIT among it may have run.
        CutIdleError = PostgresWire.FatalError(PostgresWire.AdminShutdown, $"Teal endpoint {name} closed this connection for a switchover: its transaction was still open when the drain budget ran out, and was rolled back; reconnect");
        CutBusyError = PostgresWire.FatalError(PostgresWire.AdminShutdown, $"Teal endpoint {name} closed this connection for a switchover: a statement was still running when the drain budget ran out, and whether it committed is unknown; reconnect");
        StoppingError = PostgresWire.FatalError(PostgresWire.AdminShutdown, $"Teal endpoint {name} is shutting down; reconnect");
        // The connections run in no execution context of their own: the one of whoever made the
        // endpoint (an API request, a host's start) would be restored around every chunk forwarded.
        using (ExecutionContext.SuppressFlow())
        {
            _acceptLoop = Task.Run(AcceptLoopAsync);
        }
    }

    public string Name { get; }

    /// <summary>The wire protocol its clients speak; fixed for the endpoint's life, as its instances' engine is.</summary>
    public ProxyProtocol Protocol { get; }

    /// <summary>The address the endpoint actually listens on (port 0 in the spec picks a free one).</summary>
    public IPEndPoint LocalEndPoint { get; }

    public EndpointTarget Target => Volatile.Read(ref _route).Target;

    /// <summary>Every server new connections go to in turn (a reader endpoint's readers), the target alone otherwise.</summary>
    public IReadOnlyList<EndpointTarget> Targets => Volatile.Read(ref _route) is { Readers: { } readers } ? readers.Targets : [Target];

    /// <summary>Writer or reader (a reader endpoint moves to green's readers at the flip).</summary>
    public Teal.Core.Instances.InstanceRole Role { get; internal set; }

    /// <summary>
    /// The instance the endpoint was declared on, when its route is another (a reader endpoint
    /// declared on blue routes to one of blue's readers): the switchover finds it by this name.
    /// </summary>
    public string? DeclaredInstance { get; internal set; }

    /// <summary>The reader canary's servers (none: no split) and the share of new connections they receive, in turn.</summary>
    public (IReadOnlyList<EndpointTarget> Targets, int Percent) Canary
    {
        get
        {
            var route = Volatile.Read(ref _route);
            return (route.Canary?.Targets ?? [], route.CanaryPercent);
        }
    }

    /// <inheritdoc cref="IEndpoint.CanaryTargets"/>
    public IReadOnlyList<EndpointTarget> CanaryTargets => Canary.Targets;

    public bool Paused
    {
        get
        {
            lock (_gate)
            {
                return _resumed is not null;
            }
        }
    }

    public EndpointStats Stats => new(
        Interlocked.Read(ref _active),
        Interlocked.Read(ref _held),
        Interlocked.Read(ref _total),
        Interlocked.Read(ref _bytesFromClients),
        Interlocked.Read(ref _bytesToClients),
        Interlocked.Read(ref _errors))
    {
        SessionsMoved = Interlocked.Read(ref _sessionsMoved),
        SessionsClosed = Interlocked.Read(ref _sessionsClosed),
    };

    /// <summary>SHA-256 fingerprint of the certificate shown to TLS clients; null when the endpoint has none.</summary>
    public string? TlsFingerprint => _options.Certificate is { } certificate ? Tls.ProxyCertificate.Fingerprint(certificate) : null;

    /// <summary>Servers of this endpoint known to refuse TLS, logged in to without asking under server TLS mode prefer.</summary>
    internal PlaintextServers Plaintext { get; }

    /// <summary>Whether the endpoint can read SCRAM verifiers, so that sessions logged in with SCRAM can move.</summary>
    internal bool HasAuthQuery => _verifiers is not null;

    internal byte[] PausedError { get; }

    internal byte[] TooManyError { get; }

    internal byte[] DrainError { get; }

    internal byte[] LoginDrainError { get; }

    internal byte[] CutIdleError { get; }

    internal byte[] CutBusyError { get; }

    internal byte[] StoppingError { get; }

    /// <summary>
    /// Binds <paramref name="listen"/> and starts accepting. With <paramref name="holdDeadline"/>
    /// the endpoint starts paused (as after <see cref="PauseAsync"/>): Teal restarting during a
    /// switchover holds clients until recovery decides where they go. <paramref name="verifiers"/>
    /// reads SCRAM verifiers, so that sessions whose client logged in with SCRAM can move at a
    /// switchover (without it they are closed with 57P01).
    /// </summary>
    public static ProxyEndpoint Start(string name, IPEndPoint listen, EndpointTarget target, ProxyOptions options, ILogger logger, TimeProvider timeProvider, TimeSpan? holdDeadline = null, IScramVerifierSource? verifiers = null, ProxyProtocol protocol = ProxyProtocol.Postgres)
    {
        options.Validate();
        var listener = new Socket(listen.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            if (options.ReusePort && OperatingSystem.IsLinux())
            {
                // .NET has no name for it: SOL_SOCKET (1), SO_REUSEPORT (15) on Linux.
                listener.SetRawSocketOption(1, 15, BitConverter.GetBytes(1));
            }

            listener.Bind(listen);
            listener.Listen(options.Backlog);
        }
        catch (SocketException ex)
        {
            listener.Dispose();
            throw new TealException("endpoint.listen-failed", $"Endpoint {name} cannot listen on {listen}: {ex.Message}",
                "Choose a free address and port for the endpoint, or stop what holds it.", ex);
        }

        var endpoint = new ProxyEndpoint(name, listener, target, options, logger, timeProvider, holdDeadline, verifiers, protocol);
        ProxyLog.Listening(logger, name, endpoint.LocalEndPoint, target);
        if (options.Certificate is { } certificate && protocol == ProxyProtocol.Postgres && EpollSockets.Enabled)
        {
            // The context now rather than at the first client's handshake, and said once.
            if (OpenSslContext.ForServer(certificate) is null)
            {
                ProxyLog.TlsThroughSslStream(logger, name, OpenSslContext.Unavailable ?? "unknown");
            }
        }

        if (holdDeadline is { } hold)
        {
            ProxyLog.Paused(logger, name, hold);
        }
        return endpoint;
    }

    /// <summary>Parses <c>host:port</c> as an endpoint spec writes it (<c>127.0.0.1:6432</c>, <c>[::1]:6432</c>, <c>localhost:6432</c>).</summary>
    public static IPEndPoint ParseListen(string name, string? listen)
    {
        if (listen is not null)
        {
            // IPEndPoint.TryParse accepts a bare address as port 0; a listen address needs its port.
            if (IPEndPoint.TryParse(listen, out var endPoint) && listen.EndsWith($":{endPoint.Port}", StringComparison.Ordinal))
            {
                return endPoint;
            }

            var colon = listen.LastIndexOf(':');
            if (colon > 0 && listen[..colon] == "localhost" && int.TryParse(listen.AsSpan(colon + 1), out var port) && port is >= 0 and <= 65535)
            {
                return new IPEndPoint(IPAddress.Loopback, port);
            }
        }

        throw new TealException("endpoint.listen-invalid", $"Endpoint {name} has no valid listen address ('{listen}')",
            "Give it as host:port with an IP address, for example 127.0.0.1:6432.");
    }

    public Task PauseAsync(TimeSpan holdDeadline, CancellationToken cancellationToken)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(holdDeadline, TimeSpan.Zero);
        lock (_gate)
        {
            _holdDeadline = holdDeadline;
            if (_resumed is null)
            {
                _resumed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _loginAhead = new TaskCompletionSource<EndpointTarget?>(TaskCreationOptions.RunContinuationsAsynchronously);
                _flippedWhilePaused = false;
                _loginsOpen = false;
            }
        }

        ProxyLog.Paused(_logger, Name, holdDeadline);
        return Task.CompletedTask;
    }

    /// <summary>
    /// Before the pause, while clients still run: every PostgreSQL session's state is read at its
    /// next transaction boundary (<see cref="ProxyConnection.RequestStateReadAhead"/>), so that the
    /// drain moves the sessions that stayed quiet without reading it inside the pause. Waits at
    /// most <see cref="ReadAheadWait"/>; a session still in a transaction reads its state in the drain.
    /// </summary>
    public async Task PrepareAsync(TimeSpan holdDeadline, CancellationToken cancellationToken)
    {
        List<ProxyConnection> sessions;
        lock (_gate)
        {
            sessions = [.. _connections.Values.OfType<ProxyConnection>().Where(c => c.Admitted)];
        }

        try
        {
            await Task.WhenAll(sessions.Select(c => c.RequestStateReadAhead())).WaitAsync(ReadAheadWait, _timeProvider, cancellationToken);
        }
        catch (TimeoutException)
        {
            // Sessions in a long transaction: they read their state at the drain, as without this.
        }
    }

    private static readonly TimeSpan ReadAheadWait = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Before the pause, green still fenced: every PostgreSQL session that can move and whose
    /// client sent something within <see cref="ActivityWindow"/> (or that LISTENs) logs in on
    /// <paramref name="target"/> over green's local socket now (<see cref="ProxyConnection.LogInBeforePause"/>),
    /// so that its move at the drain only waits for the route. Waits at most <see cref="LoginBeforePauseWait"/>;
    /// a move waits for a login still under way until the route comes. The resume closes the logins
    /// no move took; so does a minute without a pause (a switchover that stopped before it paused).
    /// </summary>
    public async Task LogInBeforePauseAsync(EndpointTarget target, string socket, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(target);
        if (Protocol != ProxyProtocol.Postgres)
        {
            return;
        }

        List<ProxyConnection> sessions;
        lock (_gate)
        {
            sessions = [.. _connections.Values.OfType<ProxyConnection>().Where(c => c.Admitted)];
        }

        if (sessions.Count == 0)
        {
            return;
        }

        // Sessions whose client is at work log in now. A pool's quiet connections wait for no one:
        // a burst of logins for all of them (49 took 1.6-2 s on two cores) would load the machine
        // into the pause. They log in once green opens, in turn, or first once their client sends.
        var reads = sessions.Select(c => c.ClientReads).ToList();
        await Task.Delay(ActivityWindow, _timeProvider, cancellationToken);
        // The state read ahead runs meanwhile: a session whose client's query waits behind it has
        // sent nothing new in the window, yet is at work (under load, the read can outlast it).
        // A quiet session that LISTENs logs in now too: logged in ahead, it replays its LISTEN on
        // green before the resume, so it hears what other sessions notify there from their first
        // write; logged in after the resume, it would miss what they notified meanwhile.
        var active = sessions.Where((c, i) => c.ClientReads != reads[i] || c.WaitsOnReadAhead || c.ListensAhead).ToList();
        var generation = Interlocked.Increment(ref _loginBeforePauseGeneration);
        var logins = active.Select(c => c.LogInBeforePause(target, socket, _stopping.Token)).OfType<Task<LoggedInSession?>>().ToList();
        var started = Stopwatch.GetTimestamp();
        try
        {
            await Task.WhenAll(logins).WaitAsync(LoginBeforePauseWait, _timeProvider, cancellationToken);
        }
        catch (TimeoutException)
        {
            // The rest log in while the pause begins; a move waits for its own.
        }

        var elapsedMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
        var loggedIn = logins.Count(l => l.IsCompletedSuccessfully && l.Result is not null);
        ProxyLog.LoggedInBeforePause(_logger, Name, loggedIn, logins.Count, sessions.Count - active.Count, target, elapsedMs);
        _ = DropUnusedLoginsLaterAsync(generation);
    }

    private static readonly TimeSpan LoginBeforePauseWait = TimeSpan.FromSeconds(2);

    /// <summary>A session whose client sent nothing for this long before the pause counts as quiet.</summary>
    private static readonly TimeSpan ActivityWindow = TimeSpan.FromMilliseconds(200);

    private int _loginBeforePauseGeneration;

    private async Task DropUnusedLoginsLaterAsync(int generation)
    {
        try
        {
            await Task.Delay(TimeSpan.FromMinutes(1), _timeProvider, _stopping.Token);
        }
        catch (OperationCanceledException)
        {
            return; // Stopping: every connection closes, and its login with it.
        }

        bool paused;
        lock (_gate)
        {
            paused = _resumed is not null;
        }

        if (!paused && Volatile.Read(ref _loginBeforePauseGeneration) == generation)
        {
            DropLoginsBeforePause();
        }
    }

    private void DropLoginsBeforePause()
    {
        foreach (var connection in _connections.Values.OfType<ProxyConnection>())
        {
            connection.DropLoginBeforePause();
        }
    }

    public async Task<EndpointDrainResult> DrainAsync(TimeSpan budget, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        List<IEndpointConnection> draining;
        lock (_gate)
        {
            draining = [.. _connections.Values.Where(c => c.Admitted)];
        }

        _verifierCache = new();
        // Sessions that LISTEN leave last: a transaction that other sessions finish on the old
        // server may NOTIFY at its commit, and a listener gone from there by then never hears it.
        // What is left of the budget, and at least a moment: a listener between transactions
        // leaves in milliseconds, and must not be cut because another session used the budget up.
        var listeners = draining.Where(c => c is ProxyConnection { ListensAhead: true }).ToList();
        // Autocommit writers leave after the sessions in a transaction, before the listeners:
        // while the drain waits for those transactions, an autocommit writer's statements go on
        // committing on the old server (one round trip each, the last waited for like any), so
        // its writes stop for the rest of the pause only, not for the others' transactions too.
        // Nothing of it is in flight once the drain ends, so the fence after it changes nothing
        // for it; a client that opens a transaction meanwhile is waited for as at the pause.
        var others = draining.Except(listeners).ToList();
        var autocommit = others.Where(c => c is ProxyConnection { Autocommitting: true }).ToList();
        var outcomes = await DepartAsync([.. others.Except(autocommit)], budget, cancellationToken);
        outcomes.AddRange(await DepartAsync(autocommit, Left(), cancellationToken));
        outcomes.AddRange(await DepartAsync(listeners, Left(), cancellationToken));
        var cut = outcomes.Count(o => o == ConnectionOutcome.ClosedAtDeadline);
        var moving = outcomes.Count(o => o == ConnectionOutcome.Moving);
        Interlocked.Add(ref _sessionsClosed, cut);
        var result = new EndpointDrainResult(draining.Count - cut - moving, cut) { Moving = moving };
        var elapsedMs = (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds;
        ProxyLog.Drained(_logger, Name, elapsedMs, result.ClosedIdle, result.ClosedAtDeadline, moving);
        return result;

        TimeSpan Left()
        {
            var left = budget - Stopwatch.GetElapsedTime(started);
            return left > LateLeaveWait ? left : LateLeaveWait;
        }
    }

    private static readonly TimeSpan LateLeaveWait = TimeSpan.FromSeconds(1);

    /// <summary>Asks each connection to leave at its transaction boundary; cuts those still in a transaction when <paramref name="budget"/> is spent.</summary>
    private async Task<List<ConnectionOutcome>> DepartAsync(List<IEndpointConnection> draining, TimeSpan budget, CancellationToken cancellationToken)
    {
        var departures = draining.Select(c => c.RequestDrain()).ToList();
        var all = Task.WhenAll(departures);
        try
        {
            await all.WaitAsync(budget, _timeProvider, cancellationToken);
        }
        catch (TimeoutException)
        {
            // The budget is spent: cut what is still in a transaction.
            for (var i = 0; i < draining.Count; i++)
            {
                if (!departures[i].IsCompleted)
                {
                    draining[i].Cut(CutReason.DrainBudgetSpent);
                }
            }

            await all;
        }

        return [.. departures.Select(d => d.Result)];
    }

    public Task FlipAsync(EndpointTarget target, CancellationToken cancellationToken) => FlipAsync([target], cancellationToken);

    /// <summary>Routes new connections over <paramref name="targets"/> in turn (one target: to it alone).</summary>
    public Task FlipAsync(IReadOnlyList<EndpointTarget> targets, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(targets);
        ArgumentOutOfRangeException.ThrowIfZero(targets.Count);
        var target = targets[0];
        ProxyRoute previous, next;
        do
        {
            previous = Volatile.Read(ref _route);
            var readers = targets.Count > 1 ? ReaderRotation.Over(targets, previous.Readers) : null;

            // A canary on the instance that becomes the target has nothing left to split off.
            // Compared by address too: the canary's instance may be renamed as it becomes the target.
            var keepCanary = previous.Canary is not null && targets.All(t => previous.Canary.Targets.All(c => c.Instance != t.Instance
                && !(c.Host == t.Host && c.Port == t.Port)));
            next = new ProxyRoute(target, keepCanary ? previous.Canary : null, keepCanary ? previous.CanaryPercent : 0) { Readers = readers };
        }
        while (Interlocked.CompareExchange(ref _route, next, previous) != previous);

        ProxyLog.Flipped(_logger, Name, previous.Target, target);
        lock (_gate)
        {
            if (_resumed is not null)
            {
                _flippedWhilePaused = true;
                LetLoginsAheadLocked();
            }
        }

        if (Protocol == ProxyProtocol.Postgres && _options.ServerTls == ServerTlsMode.Prefer && !Plaintext.Known(target))
        {
            // While green opens (clients are still held), learn whether it speaks TLS, so the
            // sessions moving there at the resume skip that round trip when it does not.
            _ = AskForTlsAsync(target);
        }

        return Task.CompletedTask;
    }

    private async Task AskForTlsAsync(EndpointTarget target)
    {
        using var link = new ServerLink();
        try
        {
            await link.OpenAsync(target, _options, _stopping.Token, Plaintext);
        }
        catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException or IOException)
        {
            // Nothing learned: the moves ask the server themselves.
        }
    }

    /// <summary>Sends <paramref name="percent"/>% of new connections to <paramref name="canary"/> (null or 0 stops the split).</summary>
    public Task SetCanaryAsync(EndpointTarget? canary, int percent, CancellationToken cancellationToken) =>
        SetCanaryAsync(canary is null ? [] : [canary], percent, cancellationToken);

    /// <summary>
    /// Sends <paramref name="percent"/>% of new connections to <paramref name="targets"/> in turn
    /// (green's streaming readers; none or 0 stops the split).
    /// </summary>
    public Task SetCanaryAsync(IReadOnlyList<EndpointTarget> targets, int percent, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(targets);
        ArgumentOutOfRangeException.ThrowIfNegative(percent);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(percent, 100);
        ProxyRoute previous, next;
        do
        {
            previous = Volatile.Read(ref _route);
            var rotation = targets.Count == 0 || percent == 0 ? null : ReaderRotation.Over(targets, previous.Canary);
            next = rotation is null ? previous with { Canary = null, CanaryPercent = 0 } : previous with { Canary = rotation, CanaryPercent = percent };
        }
        while (Interlocked.CompareExchange(ref _route, next, previous) != previous);

        ProxyLog.CanarySet(_logger, Name, next.CanaryPercent, next.Canary is { } c ? string.Join(", ", c.Targets) : "none");
        return Task.CompletedTask;
    }

    /// <summary>
    /// The switchover released green's fence: once this pause has also flipped the route there,
    /// the sessions moving to it log in now, and wait logged in for the resume to replay their
    /// state and go on. Nothing of a client's is sent before the resume. A reader endpoint
    /// spread over green's readers logs in at the resume, as before (a reader may not have
    /// replayed green's logins yet).
    /// </summary>
    public Task LoginsOpenAsync(CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            if (_resumed is not null)
            {
                _loginsOpen = true;
                LetLoginsAheadLocked();
            }
        }

        return Task.CompletedTask;
    }

    /// <summary>
    /// The same for a <c>teal proxy</c>, whose flip travels with the resume: green's logins are
    /// back and the resume is to route to <paramref name="target"/>, so the sessions moving in
    /// this pause log in there now. The route is left as it is, so a resume that does not route
    /// there (a rollback, a resume without a target) drops those logins and the sessions log in
    /// on the route it resumes, as they would have without this call. Does nothing unless paused.
    /// </summary>
    public Task LoginsOpenAsync(EndpointTarget target, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(target);
        lock (_gate)
        {
            if (_resumed is not null && _loginAhead?.TrySetResult(target) == true)
            {
                ProxyLog.LoginsAhead(_logger, Name, target);
            }
        }

        return Task.CompletedTask;
    }

    private void LetLoginsAheadLocked()
    {
        if (_flippedWhilePaused && _loginsOpen && Volatile.Read(ref _route) is { Readers: null } route && _loginAhead?.TrySetResult(route.Target) == true)
        {
            ProxyLog.LoginsAhead(_logger, Name, route.Target);
        }
    }

    public Task ResumeAsync(CancellationToken cancellationToken)
    {
        TaskCompletionSource? resumed;
        TaskCompletionSource<EndpointTarget?>? loginAhead;
        lock (_gate)
        {
            resumed = _resumed;
            _resumed = null;
            loginAhead = _loginAhead;
            _loginAhead = null;
        }

        // Sessions still waiting to log in do it on the resumed route.
        loginAhead?.TrySetResult(null);

        // Moves took theirs at the drain; what is left was logged in for sessions that did not move.
        DropLoginsBeforePause();

        if (resumed is not null)
        {
            // Continuations run on the thread pool, so resuming hundreds of held connections
            // costs the caller one call.
            var held = Interlocked.Read(ref _held);
            resumed.TrySetResult();
            ProxyLog.Resumed(_logger, Name, held, Target);
        }

        return Task.CompletedTask;
    }

    /// <summary>Whether the listener is closed (<see cref="StopAcceptingAsync"/>); open sessions may still run.</summary>
    public bool Accepting => Volatile.Read(ref _acceptStopped) == 0;

    /// <summary>
    /// Closes the listener and leaves every open connection (and held one) running: a
    /// <c>teal proxy</c> being replaced lets its sessions end by themselves while a new process
    /// accepts beside it on the same address.
    /// </summary>
    public async Task StopAcceptingAsync()
    {
        if (Interlocked.Exchange(ref _acceptStopped, 1) != 0)
        {
            return;
        }

        _listener.Dispose();
        try
        {
            await _acceptLoop;
        }
        catch (ObjectDisposedException)
        {
            // The loop ends on the closed socket.
        }
    }

    /// <summary>Open connections (admitted, held or logging in).</summary>
    public int OpenConnections => _connections.Count;

    /// <summary>Stops listening, refuses held connections and cuts the open ones.</summary>
    public async Task StopAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stopping.CancelAsync();
        Interlocked.Exchange(ref _acceptStopped, 1);
        _listener.Dispose();
        await _acceptLoop;
        foreach (var connection in _connections.Values)
        {
            connection.Cut(CutReason.EndpointStopping);
        }

        await Task.WhenAll(_connections.Values.Select(c => c.Completion));
        _stopping.Dispose();
        ProxyLog.Stopped(_logger, Name);
    }

    public ValueTask DisposeAsync() => new(StopAsync());

    /// <summary>
    /// <see cref="AdmitAsync(IEndpointConnection, CancellationToken)"/> for a client that sends
    /// nothing while held (it waits for the server's answer to its startup packet, or, MySQL, for
    /// the server's greeting): a peek at its socket that returns 0 can only be its FIN, and a
    /// client that hangs up while held is let go at once instead of at the resume.
    /// <paramref name="peekClient"/> must leave what it reads in the socket.
    /// </summary>
    internal async Task<EndpointTarget?> AdmitAsync(IEndpointConnection connection, Func<Memory<byte>, CancellationToken, ValueTask<int>> peekClient, CancellationToken stopping)
    {
        if (!Paused)
        {
            return await AdmitAsync(connection, stopping);
        }

        using var held = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        using var watching = new CancellationTokenSource();
        var watch = WatchForHangUpAsync(peekClient, held, watching.Token);
        try
        {
            return await AdmitAsync(connection, held.Token);
        }
        catch (OperationCanceledException) when (!stopping.IsCancellationRequested)
        {
            throw new IOException("the client hung up while held");
        }
        finally
        {
            // The peek must be over before anything else reads the socket.
            await watching.CancelAsync();
            await watch;
        }
    }

    private static async Task WatchForHangUpAsync(Func<Memory<byte>, CancellationToken, ValueTask<int>> peekClient, CancellationTokenSource held, CancellationToken watching)
    {
        try
        {
            if (await peekClient(new byte[1], watching) == 0)
            {
                await held.CancelAsync();
            }
        }
        catch (OperationCanceledException)
        {
            // Admitted (or refused) first: stop watching.
        }
        catch (SocketException)
        {
            await held.CancelAsync();
        }
    }

    /// <summary>
    /// Lets a connection through to the route, or holds it while paused. Null means it was held
    /// past the deadline and must be refused.
    /// </summary>
    internal async Task<EndpointTarget?> AdmitAsync(IEndpointConnection connection, CancellationToken stopping)
    {
        while (true)
        {
            Task resumed;
            TimeSpan deadline;
            lock (_gate)
            {
                if (_resumed is null)
                {
                    // Admitted again (a drain came while it was still logging in): counted once.
                    if (!connection.Admitted)
                    {
                        connection.Admitted = true;
                        Interlocked.Increment(ref _active);
                    }

                    return Volatile.Read(ref _route).Pick(Interlocked.Increment(ref _routed) - 1);
                }

                resumed = _resumed.Task;
                deadline = _holdDeadline;
                Interlocked.Increment(ref _held);
            }

            try
            {
                await resumed.WaitAsync(deadline, _timeProvider, stopping);
            }
            catch (TimeoutException)
            {
                Interlocked.Increment(ref _errors);
                ProxyLog.HoldExpired(_logger, Name, deadline);
                return null;
            }
            finally
            {
                Interlocked.Decrement(ref _held);
            }
        }
    }

    /// <summary>
    /// The route's target for a session moving at a switchover, when the endpoint is not paused:
    /// false while it is. The session takes it under its own lock, so that a drain of a later
    /// pause knows whether the session still waits for a route or already has one.
    /// </summary>
    internal bool TryTakeRoute([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out EndpointTarget? target)
    {
        lock (_gate)
        {
            if (_resumed is null)
            {
                // A moved session takes its turn among the readers like a new connection.
                target = Volatile.Read(ref _route).Next();
                return true;
            }
        }

        target = null;
        return false;
    }

    /// <summary>Waits until the endpoint is not paused (at once when it is not); false when the pause outlives its hold deadline.</summary>
    internal async Task<bool> WaitForResumeAsync(CancellationToken cancellationToken)
    {
        Task resumed;
        TimeSpan deadline;
        lock (_gate)
        {
            if (_resumed is null)
            {
                return true;
            }

            resumed = _resumed.Task;
            deadline = _holdDeadline;
        }

        try
        {
            await resumed.WaitAsync(deadline, _timeProvider, cancellationToken);
            return true;
        }
        catch (TimeoutException)
        {
            return false;
        }
    }

    /// <summary>
    /// For a session moving at a switchover: completes with the target to log in on before the
    /// resume once that is allowed (<see cref="LoginsOpenAsync(CancellationToken)"/> or <see cref="LoginsOpenAsync(EndpointTarget, CancellationToken)"/>), or with null at the resume
    /// (and at once when the endpoint is not paused). Never the client's go-ahead: that is
    /// <see cref="TryTakeRoute"/>.
    /// </summary>
    /// <summary>A moving session's client sent something while held: its login goes before idle sessions' logins.</summary>
    internal void MoveWaiting()
    {
        lock (_waitingGate)
        {
            if (_waitingMoves++ == 0)
            {
                _noWaitingMoves = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }
    }

    /// <summary>A session counted by <see cref="MoveWaiting"/> logged in on the new server, or its move ended.</summary>
    internal void MoveWaitingDone()
    {
        lock (_waitingGate)
        {
            if (--_waitingMoves == 0)
            {
                _noWaitingMoves.TrySetResult();
            }
        }
    }

    /// <summary>Completes once no moving session with a waiting client is still to log in.</summary>
    internal Task NoWaitingMovesAsync()
    {
        lock (_waitingGate)
        {
            return _noWaitingMoves.Task;
        }
    }

    private static TaskCompletionSource Completed()
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        done.SetResult();
        return done;
    }

    internal Task<EndpointTarget?> LoginAheadAsync()
    {
        lock (_gate)
        {
            return _resumed is null || _loginAhead is null ? Task.FromResult<EndpointTarget?>(null) : _loginAhead.Task;
        }
    }

    /// <summary>The SCRAM verifier of <paramref name="role"/> on <paramref name="target"/>, read once per drain.</summary>
    internal Task<ScramVerifier?> VerifierAsync(EndpointTarget target, string role, CancellationToken cancellationToken) =>
        _verifiers is null
            ? Task.FromResult<ScramVerifier?>(null)
            : _verifierCache.GetOrAdd((target, role), key => ReadVerifierAsync(key.Target, key.Role, _stopping.Token));

    /// <summary>
    /// The verifier a client logging in proves its password against. Never cached, so that a
    /// changed or revoked password counts at the next login, as on the server; logins of one
    /// role that arrive while a read is under way share it, so a burst of hundreds of
    /// reconnecting clients costs one auth query, not hundreds.
    /// </summary>
    internal async Task<ScramVerifier?> LoginVerifierAsync(EndpointTarget target, string role, CancellationToken cancellationToken)
    {
        var key = (target, role);
        var read = _loginReads.GetOrAdd(key, k => ReadVerifierAsync(k.Target, k.Role, _stopping.Token));
        try
        {
            return await read.WaitAsync(cancellationToken);
        }
        finally
        {
            if (read.IsCompleted)
            {
                _loginReads.TryRemove(new KeyValuePair<(EndpointTarget, string), Task<ScramVerifier?>>(key, read));
            }
        }
    }

    private async Task<ScramVerifier?> ReadVerifierAsync(EndpointTarget on, string role, CancellationToken cancellationToken)
    {
        if (_verifiers is null)
        {
            return null;
        }

        try
        {
            return ScramVerifier.Parse(await _verifiers.ReadAsync(on, role, cancellationToken));
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // The login goes to the server as before: it judges the password itself.
            ProxyLog.VerifierReadFailed(_logger, Name, on, role, ex.Message);
            return null;
        }
    }

    internal async Task ForwardCancelAsync(byte[] packet, CancellationToken stopping)
    {
        // A cancel belongs on the instance running the session; fall back to the route when the
        // key is unknown (the session ended, or it came through another endpoint). A moved
        // session still holds the key of its first server: the cancel carries the new one.
        var key = BinaryPrimitives.ReadUInt64BigEndian(packet.AsSpan(8));
        var target = Target;
        if (_backendKeys.TryGetValue(key, out var owner))
        {
            target = owner.Target;
            BinaryPrimitives.WriteUInt64BigEndian(packet.AsSpan(8), owner.ServerKey);
        }

        using var server = new Socket(SocketType.Stream, ProtocolType.Tcp);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        timeout.CancelAfter(_options.ConnectTimeout);
        try
        {
            await server.ConnectAsync(target.Host, target.Port, timeout.Token);
            await server.SendAsync(packet, SocketFlags.None, timeout.Token);
        }
        catch (Exception ex) when (ex is SocketException || ex is OperationCanceledException && !stopping.IsCancellationRequested)
        {
            OnUpstreamConnectFailed(target, ex.Message);
        }
    }

    internal void RegisterBackendKey(ProxyConnection connection, ulong clientKey, ulong serverKey)
    {
        if (connection.Target is { } target)
        {
            _backendKeys[clientKey] = (target, serverKey);
        }
    }

    internal void OnSessionMoved(ProxyConnection connection, EndpointTarget target, MoveTimings timings)
    {
        Interlocked.Increment(ref _sessionsMoved);
        ProxyLog.SessionMoved(_logger, Name, connection.Id, target, timings.BoundaryMs, timings.StateReadMs, timings.StateReadAhead ? "(read ahead of the pause: an empty query)" : "(in the drain)", timings.LeaveMs, timings.WaitMs, timings.LoginsOpenedMs, timings.LoginMs, timings.LoggedInBeforePause ? "before the pause (over green's local socket while fenced)" : timings.LoggedInBeforeResume ? "before the resume" : "at the resume", timings.ReplayMs, timings.ReplayedBeforeResume ? "before the resume" : "at the resume", timings.ReadyAfterResumeMs);
    }

    internal void OnLoginAheadFailed(ProxyConnection connection, EndpointTarget target, string reason) =>
        ProxyLog.LoginAheadFailed(_logger, Name, connection.Id, target, reason);

    internal void OnLoginBeforePauseFailed(ProxyConnection connection, EndpointTarget target, string reason) =>
        ProxyLog.LoginBeforePauseFailed(_logger, Name, connection.Id, target, reason);

    internal void OnSessionNotMoved(ProxyConnection connection, string reason)
    {
        Interlocked.Increment(ref _sessionsClosed);
        ProxyLog.SessionNotMoved(_logger, Name, connection.Id, reason);
    }

    /// <summary>Counts a connection against the cap; false (and counted as an error) when it is over.</summary>
    internal bool TryTakeSlot()
    {
        if (Interlocked.Increment(ref _sessions) <= _options.MaxConnections || _options.MaxConnections == 0)
        {
            return true;
        }

        Interlocked.Decrement(ref _sessions);
        Interlocked.Increment(ref _errors);
        return false;
    }

    internal void ReleaseSlot() => Interlocked.Decrement(ref _sessions);

    internal void CountFromClient(int bytes) => Interlocked.Add(ref _bytesFromClients, bytes);

    internal void CountToClient(int bytes) => Interlocked.Add(ref _bytesToClients, bytes);

    internal void OnUpstreamConnectFailed(EndpointTarget target, string reason)
    {
        Interlocked.Increment(ref _errors);
        ProxyLog.UpstreamConnectFailed(_logger, Name, target, reason);
    }

    internal void OnConnectionEnded(IEndpointConnection connection, string reason)
    {
        if (connection is ProxyConnection { BackendKey: { } key })
        {
            _backendKeys.TryRemove(key, out _);
        }

        if (connection.Admitted)
        {
            Interlocked.Decrement(ref _active);
        }

        ProxyLog.ConnectionEnded(_logger, Name, connection.Id, reason);
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stopping.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stopping.Token);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException || ex is SocketException && Volatile.Read(ref _acceptStopped) != 0)
            {
                return;
            }
            catch (SocketException ex) when (ex.SocketErrorCode is SocketError.ConnectionAborted or SocketError.ConnectionReset)
            {
                // The client gave up before we accepted it.
                continue;
            }
            catch (SocketException ex)
            {
                // Out of file descriptors or similar: log, breathe, keep serving the connections we have.
                ProxyLog.AcceptFailed(_logger, Name, ex);
                await Task.Delay(TimeSpan.FromMilliseconds(100), _timeProvider, CancellationToken.None);
                continue;
            }

            client.NoDelay = true;
            Interlocked.Increment(ref _total);
            var id = Interlocked.Increment(ref _nextConnectionId);
            IEndpointConnection connection = Protocol == ProxyProtocol.MySql
                ? new MySqlProxyConnection(this, client, id, _options)
                : new ProxyConnection(this, client, id, _options);
            // Completion is set before the connection can be admitted, so a drain always awaits
            // the real lifetime; Start queues the run to the pool, off the accept loop.
            var run = new Task<Task>(() => RunConnectionAsync(connection));
            connection.Completion = run.Unwrap();
            _connections[connection.Id] = connection;
            run.Start(TaskScheduler.Default);
        }
    }

    private async Task RunConnectionAsync(IEndpointConnection connection)
    {
        try
        {
            await connection.RunAsync(_stopping.Token);
        }
        catch (Exception ex)
        {
            // A bug in one connection must not take the endpoint down; it is logged in full.
            ProxyLog.ConnectionFailed(_logger, Name, connection.Id, ex);
        }
        finally
        {
            _connections.TryRemove(connection.Id, out _);
        }
    }
}
