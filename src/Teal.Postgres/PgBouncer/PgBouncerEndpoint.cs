using Microsoft.Extensions.Logging;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Processes;
using Teal.Core.Secrets;

namespace Teal.Postgres.PgBouncer;

/// <summary>
/// An endpoint served by a PgBouncer the operator runs, driven through its admin console:
/// pause = <c>PAUSE db</c>, flip = rewrite the entry's line in the ini and <c>RELOAD</c>,
/// resume = <c>RESUME db</c>. With transaction pooling clients see a pause, not an error.
/// <para>
/// The hold deadline: PgBouncer has no per-pause deadline. A held client waits for at most
/// PgBouncer's own <c>query_wait_timeout</c> and then gets PgBouncer's error; <see cref="PauseAsync"/>
/// reads that setting, reports it in <see cref="HeldClientTimeout"/> and warns when it is
/// shorter than the deadline Teal was asked for.
/// </para>
/// </summary>
public sealed partial class PgBouncerEndpoint : IEndpoint, IAsyncDisposable
{
    private static readonly TimeSpan DrainPollInterval = TimeSpan.FromMilliseconds(20);

    // Reading Stats refreshes the figures in the background when they are older than this.
    private static readonly TimeSpan StatsMaxAge = TimeSpan.FromSeconds(1);

    private readonly PgBouncerSpec _spec;
    private readonly string? _password;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly PgBouncerConsoleSlot _control;
    private readonly PgBouncerConsoleSlot _statsConsole;
    private long _statsReadAt;
    private int _statsRefreshing;
    private FileOwner? _configOwner;
    private EndpointTarget _target;
    private EndpointStats _stats = EndpointStats.Empty;
    private long _errors;
    private volatile bool _paused;

    // The console connection PrepareAsync opened for the next PAUSE.
    private PgBouncerConsole? _pauseConsole;

    /// <param name="name">The endpoint's name.</param>
    /// <param name="spec">How to reach the PgBouncer and which entry to move.</param>
    /// <param name="target">Where the entry points now.</param>
    /// <param name="adminPassword">Password of <see cref="PgBouncerSpec.AdminUser"/>; null for trust authentication.</param>
    /// <param name="logger">Where to log; the password never goes there.</param>
    /// <param name="time">Clock for the drain budget and timings.</param>
    public PgBouncerEndpoint(string name, PgBouncerSpec spec, EndpointTarget target, string? adminPassword, ILogger logger, TimeProvider? time = null)
    {
        Name = name;
        _spec = spec;
        _target = target;
        _password = adminPassword;
        _logger = logger;
        _time = time ?? TimeProvider.System;
        _control = new PgBouncerConsoleSlot(spec, adminPassword, name);
        _statsConsole = new PgBouncerConsoleSlot(spec, adminPassword, name);
        _statsReadAt = _time.GetTimestamp() - (long)(StatsMaxAge.TotalSeconds * 2 * _time.TimestampFrequency);
    }

    public string Name { get; }

    public EndpointTarget Target => Volatile.Read(ref _target);

    public bool Paused => _paused;

    /// <summary>
    /// The last figures read from PgBouncer, with the current error count. Reading them starts a
    /// background refresh when they are more than a second old (the property cannot wait for
    /// the console); <see cref="RefreshStatsAsync"/> reads them now.
    /// </summary>
    public EndpointStats Stats
    {
        get
        {
            RefreshInBackgroundIfStale();
            return Volatile.Read(ref _stats) with { Errors = Interlocked.Read(ref _errors) };
        }
    }

    /// <summary>PgBouncer's <c>query_wait_timeout</c> as read at the last pause: how long a held client waits before PgBouncer fails it. Null: forever.</summary>
    public TimeSpan? HeldClientTimeout { get; private set; }

    /// <summary>Builds the endpoint from the operator's spec, reading the admin password from the secrets store.</summary>
    public static PgBouncerEndpoint Create(EndpointSpec spec, EndpointTarget target, ISecretStore secrets, ILogger logger, TimeProvider? time = null)
    {
        var pgBouncer = spec.PgBouncer
            ?? throw new TealException("endpoint.pgbouncer-spec-missing", $"endpoint '{spec.Name}' is a PgBouncer endpoint without PgBouncer settings", "give the admin host, port, user, database entry and ini file");
        string? password = null;
        if (pgBouncer.SecretRef is { } reference)
        {
            password = secrets.Read(reference)
                ?? throw new TealException("endpoint.pgbouncer-secret-missing", $"no secret is stored under '{reference}' for endpoint '{spec.Name}'", "store the PgBouncer admin password under that reference");
        }

        return new PgBouncerEndpoint(spec.Name, pgBouncer, target, password, logger, time);
    }

    /// <summary>
    /// Reads <c>query_wait_timeout</c> (warning when it is shorter than <paramref name="holdDeadline"/>),
    /// checks that PgBouncer serves the entry, and opens the console connection the <c>PAUSE</c>
    /// will be sent on — so that <see cref="PauseAsync"/> holds clients for the pause alone.
    /// </summary>
    public async Task PrepareAsync(TimeSpan holdDeadline, CancellationToken cancellationToken)
    {
        var console = await CountingErrorsAsync(() => OpenPauseConsoleAsync(holdDeadline, cancellationToken));
        if (Interlocked.Exchange(ref _pauseConsole, console) is { } previous)
        {
            await previous.DisposeAsync();
        }
    }

    /// <summary>
    /// <c>PAUSE db</c>: PgBouncer holds new queries at once and answers only when every server
    /// connection of the database is released — in transaction pooling, when the transactions in
    /// flight have ended. So when this returns, blue has no connection from PgBouncer left and
    /// no transaction of its clients open. Cancelling gives up the wait and resumes the
    /// database (PgBouncer would otherwise stay paused after the asking connection is gone).
    /// Without <see cref="PrepareAsync"/> first (or when its connection broke), it prepares now.
    /// </summary>
    public async Task PauseAsync(TimeSpan holdDeadline, CancellationToken cancellationToken)
    {
        await CountingErrorsAsync(async () =>
        {
            var prepared = Interlocked.Exchange(ref _pauseConsole, null);
            if (prepared is null || prepared.IsBroken)
            {
                if (prepared is not null)
                {
                    await prepared.DisposeAsync();
                }

                prepared = await OpenPauseConsoleAsync(holdDeadline, cancellationToken);
            }

            // Its own connection: PAUSE blocks it until the transactions end, and stats or a
            // cancelling RESUME must still get through on the control connection meanwhile.
            var started = _time.GetTimestamp();
            await using var pause = prepared;
            try
            {
                await pause.RunAsync($"PAUSE {PgBouncerConsole.Quote(_spec.Database)}", cancellationToken);
            }
            catch (Exception ex) when (ex is OperationCanceledException or TealException)
            {
                await pause.DisposeAsync();
                await ResumeAbandonedPauseAsync(ex is OperationCanceledException ? "cancelled" : ex.Message);
                throw;
            }

            _paused = true;
            var elapsedMs = (long)_time.GetElapsedTime(started).TotalMilliseconds;
            var held = Describe(HeldClientTimeout);
            PgBouncerLog.Paused(_logger, Name, _spec.Database, elapsedMs, held);
        });
    }

    /// <summary>The checks and reads before a PAUSE, and the console connection to send it on.</summary>
    private async Task<PgBouncerConsole> OpenPauseConsoleAsync(TimeSpan holdDeadline, CancellationToken cancellationToken)
    {
        var (heldTimeout, live) = await WithControlAsync(
            async c => (await c.HeldClientTimeoutAsync(cancellationToken), await c.ShowDatabaseAsync(cancellationToken)),
            cancellationToken);
        HeldClientTimeout = heldTimeout;
        if (live is null)
        {
            throw new TealException("endpoint.pgbouncer-database-unknown", $"PgBouncer at {_spec.AdminHost}:{_spec.AdminPort} has no database '{_spec.Database}'", "check the endpoint's database entry and RELOAD PgBouncer");
        }

        if (live.PoolMode is { } mode && mode != "transaction" && mode != "statement")
        {
            PgBouncerLog.NotTransactionPooling(_logger, Name, _spec.Database, mode);
        }

        if (heldTimeout is { } t && t < holdDeadline)
        {
            var shortTimeout = Describe(heldTimeout);
            PgBouncerLog.HeldClientTimeoutShort(_logger, Name, shortTimeout, holdDeadline);
        }

        if (ProcessRunner.IsRoot && _configOwner is null)
        {
            // Read now, while nothing waits, so that the flip spawns no process.
            _configOwner = await AtomicFile.ReadOwnerAsync(_spec.ConfigFile, cancellationToken);
        }

        return await PgBouncerConsole.OpenAsync(_spec, _password, Name, cancellationToken);
    }

    /// <summary>
    /// After a PAUSE that answered there is nothing open: PAUSE already waited for every
    /// transaction (transaction pooling) or session (session pooling). Server connections still held (session pooling, or a pause that has
    /// not completed) are watched until they close or the budget ends. PgBouncer 1.18 cannot
    /// close one client's connection (<c>KILL db</c> would drop the held clients too), so what
    /// remains is reported as still open — closed ones count as <see cref="EndpointDrainResult.ClosedIdle"/>
    /// — and the fence on blue ends those sessions.
    /// </summary>
    public async Task<EndpointDrainResult> DrainAsync(TimeSpan budget, CancellationToken cancellationToken)
    {
        if (_paused)
        {
            // PAUSE answered: PgBouncer closes the entry's server connections as they are released
            // and answers only when none is left, and a paused entry opens no new one. Nothing
            // to watch, and no console round trips inside the write pause.
            return new EndpointDrainResult(0, 0);
        }

        var deadline = _time.GetTimestamp() + (long)(budget.TotalSeconds * _time.TimestampFrequency);
        long? initial = null;
        return await CountingErrorsAsync(async () =>
        {
            while (true)
            {
                var (servers, clients) = await WithControlAsync(c => CountConnectionsAsync(c, cancellationToken), cancellationToken);
                initial ??= servers;
                if (servers == 0)
                {
                    return new EndpointDrainResult((int)initial.Value, 0);
                }

                if (_time.GetTimestamp() >= deadline)
                {
                    PgBouncerLog.DrainLeftServers(_logger, Name, _spec.Database, servers, clients);
                    return new EndpointDrainResult((int)Math.Max(0, initial.Value - servers), 0);
                }

                await Task.Delay(DrainPollInterval, _time, cancellationToken);
            }
        });
    }

    /// <summary>
    /// Rewrites the entry's line in the ini (host, port, dbname of <paramref name="target"/>; every
    /// other byte of the file unchanged; atomic replace), RELOADs, and checks with
    /// <c>SHOW DATABASES</c> that PgBouncer now points there — RELOAD answers OK even when it could
    /// not parse the file. If it does not, the previous file is put back and reloaded. Cancellation
    /// is honoured until the file is replaced; after that the flip runs to its end so that the file
    /// and PgBouncer never disagree.
    /// </summary>
    public async Task FlipAsync(EndpointTarget target, CancellationToken cancellationToken)
    {
        var started = _time.GetTimestamp();
        await CountingErrorsAsync(async () =>
        {
            var original = await ReadConfigAsync(cancellationToken);
            var text = PgBouncerConfigFile.Decode(original);
            var updated = PgBouncerConfigFile.Repoint(text, _spec.Database, target);
            var changed = updated != text;
            if (changed)
            {
                await AtomicFile.WriteAsync(_spec.ConfigFile, PgBouncerConfigFile.Encode(updated), _configOwner, cancellationToken);
            }

            var live = await ReloadAsync();
            if (live is null || !live.PointsAt(target))
            {
                var now = live?.ToString() ?? "nothing";
                PgBouncerLog.ReloadNotApplied(_logger, Name, _spec.Database, now, target);
                if (changed)
                {
                    await AtomicFile.WriteAsync(_spec.ConfigFile, original, _configOwner, CancellationToken.None);
                    await ReloadAsync();
                }

                throw new TealException(
                    "endpoint.pgbouncer-reload-not-applied",
                    $"after RELOAD PgBouncer points '{_spec.Database}' at {now}, not at {target}; the previous ini is back in place",
                    "PgBouncer's log names what it could not load (RELOAD answers OK even then)");
            }

            var previous = Volatile.Read(ref _target);
            Volatile.Write(ref _target, target);
            var elapsedMs = (long)_time.GetElapsedTime(started).TotalMilliseconds;
            PgBouncerLog.Flipped(_logger, Name, _spec.Database, target, previous, elapsedMs);
        });
    }

    /// <summary><c>RESUME db</c>: held queries proceed to wherever the entry points now. Resuming a database that is not paused is not an error.</summary>
    public async Task ResumeAsync(CancellationToken cancellationToken)
    {
        await CountingErrorsAsync(async () =>
        {
            if (await TryResumeAsync(cancellationToken))
            {
                PgBouncerLog.Resumed(_logger, Name, _spec.Database);
            }
            else
            {
                PgBouncerLog.ResumeNotPaused(_logger, Name, _spec.Database);
            }

            _paused = false;
        });
    }

    /// <summary>
    /// Reads <c>SHOW POOLS</c> and <c>SHOW STATS</c> for the entry: active and waiting (held)
    /// clients, transactions, bytes. PgBouncer keeps no count of client errors, so
    /// <see cref="EndpointStats.Errors"/> counts the operations on this endpoint that failed.
    /// </summary>
    public async Task<EndpointStats> RefreshStatsAsync(CancellationToken cancellationToken)
    {
        var stats = await _statsConsole.UseAsync(
            async c =>
            {
                var pools = (await c.RunAsync("SHOW POOLS", cancellationToken)).NamedRows().Where(r => r["database"] == _spec.Database).ToList();
                var totals = (await c.RunAsync("SHOW STATS", cancellationToken)).NamedRows().FirstOrDefault(r => r["database"] == _spec.Database);
                return new EndpointStats(
                    pools.Sum(r => r.Number("cl_active")),
                    pools.Sum(r => r.Number("cl_waiting")),
                    totals.Values is null ? 0 : totals.Number("total_xact_count"),
                    totals.Values is null ? 0 : totals.Number("total_received"),
                    totals.Values is null ? 0 : totals.Number("total_sent"),
                    Interlocked.Read(ref _errors));
            },
            cancellationToken);
        Volatile.Write(ref _stats, stats);
        Interlocked.Exchange(ref _statsReadAt, _time.GetTimestamp());
        return stats;
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _pauseConsole, null) is { } prepared)
        {
            await prepared.DisposeAsync();
        }

        await _control.DisposeAsync();
        await _statsConsole.DisposeAsync();
    }

    private async Task<(long Servers, long Clients)> CountConnectionsAsync(PgBouncerConsole console, CancellationToken cancellationToken)
    {
        var servers = (await console.RunAsync("SHOW SERVERS", cancellationToken)).NamedRows().Count(r => r["database"] == _spec.Database);
        var clients = (await console.RunAsync("SHOW CLIENTS", cancellationToken)).NamedRows().Count(r => r["database"] == _spec.Database && r["state"] == "active");
        return (servers, clients);
    }

    /// <summary>RELOAD, then where the entry points now. Not cancellable: it follows a file replacement.</summary>
    private Task<PgBouncerDatabase?> ReloadAsync() =>
        WithControlAsync(
            async c =>
            {
                await c.RunAsync("RELOAD", CancellationToken.None);
                return await c.ShowDatabaseAsync(CancellationToken.None);
            },
            CancellationToken.None);

    /// <summary>RESUME; false when PgBouncer says the database was not paused.</summary>
    private async Task<bool> TryResumeAsync(CancellationToken cancellationToken)
    {
        try
        {
            await WithControlAsync(c => c.RunAsync($"RESUME {PgBouncerConsole.Quote(_spec.Database)}", cancellationToken), cancellationToken);
            return true;
        }
        catch (TealException ex) when (ex.Code == "endpoint.pgbouncer-command-failed" && ex.Message.Contains("not paused", StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }
    }

    private async Task ResumeAbandonedPauseAsync(string reason)
    {
        try
        {
            await TryResumeAsync(CancellationToken.None);
            PgBouncerLog.PauseAbandoned(_logger, Name, _spec.Database, reason);
        }
        catch (TealException ex)
        {
            PgBouncerLog.ResumeAfterAbandonFailed(_logger, ex, Name, _spec.Database);
        }

        _paused = false;
    }

    /// <summary>Runs <paramref name="action"/> on the operations' console connection.</summary>
    private Task<T> WithControlAsync<T>(Func<PgBouncerConsole, Task<T>> action, CancellationToken cancellationToken) =>
        _control.UseAsync(action, cancellationToken);

    private void RefreshInBackgroundIfStale()
    {
        if (_time.GetElapsedTime(Interlocked.Read(ref _statsReadAt)) < StatsMaxAge || Interlocked.CompareExchange(ref _statsRefreshing, 1, 0) != 0)
        {
            return;
        }

        _ = Task.Run(async () =>
        {
            try
            {
                await RefreshStatsAsync(CancellationToken.None);
            }
            catch (Exception ex) when (ex is TealException or ObjectDisposedException)
            {
                // Figures stay as they were; an unreachable PgBouncer shows in the operations.
                Interlocked.Exchange(ref _statsReadAt, _time.GetTimestamp());
            }
            finally
            {
                Volatile.Write(ref _statsRefreshing, 0);
            }
        });
    }

    private async Task CountingErrorsAsync(Func<Task> action) => await CountingErrorsAsync(async () =>
    {
        await action();
        return true;
    });

    private async Task<T> CountingErrorsAsync<T>(Func<Task<T>> action)
    {
        try
        {
            return await action();
        }
        catch (TealException)
        {
            Interlocked.Increment(ref _errors);
            throw;
        }
    }

    private async Task<PgBouncerEntry> ReadEntryAsync(CancellationToken cancellationToken)
    {
        var text = PgBouncerConfigFile.Decode(await ReadConfigAsync(cancellationToken));
        return PgBouncerConfigFile.FindEntry(text, _spec.Database)
            ?? throw new TealException(
                "endpoint.pgbouncer-entry-missing",
                $"{_spec.ConfigFile} has no [databases] entry '{_spec.Database}'",
                $"give the ini file that defines '{_spec.Database}' (an entry in an %include'd file: give that file)");
    }

    private async Task<byte[]> ReadConfigAsync(CancellationToken cancellationToken)
    {
        try
        {
            return await File.ReadAllBytesAsync(_spec.ConfigFile, cancellationToken);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new TealException("endpoint.pgbouncer-config-unreadable", $"cannot read PgBouncer's ini {_spec.ConfigFile}: {ex.Message}", "give the path of the ini PgBouncer runs with, readable by Teal", ex);
        }
    }

    private static string Describe(TimeSpan? heldTimeout) =>
        heldTimeout is { } t ? $"{t.TotalSeconds:0.#} s" : "forever (query_wait_timeout = 0)";
}
