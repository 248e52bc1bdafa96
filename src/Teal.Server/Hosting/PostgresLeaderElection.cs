using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;
using Teal.Core.Errors;
using Teal.Core.Events;
using Teal.Core.Hosting;
using Teal.Server.State;

namespace Teal.Server.Hosting;

/// <summary>
/// Elects one leader among the <c>teal serve</c> processes sharing a PostgreSQL state store: a
/// session-level advisory lock held on a dedicated connection. PostgreSQL releases it when that
/// session ends — the process died (<c>kill -9</c> closes its socket) or the connection broke —
/// and a standby trying every <see cref="Interval"/> takes it. The leader checks its session
/// every interval; when the check fails it has lost the lock (or soon will), so it refuses every
/// write at once, cancels its work and stops, for its service manager to start it again as a
/// standby. Its writes could not land meanwhile anyway: each one runs the database's leader
/// guard, which fails once its lock session is gone.
/// </summary>
public sealed partial class PostgresLeaderElection(
    PostgresStateStore store,
    Leadership leadership,
    BackgroundWork background,
    EventSignal signal,
    TealServerOptions options,
    IServer server,
    IHostApplicationLifetime lifetime,
    TimeProvider time,
    ILogger<PostgresLeaderElection> logger) : BackgroundService
{
    /// <summary>How often a standby tries the lock and the leader checks its session.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How long the leader's session check may take before the session counts as lost. Generous:
    /// a loaded machine can stall a query for seconds, and a leader that gives up too early stops
    /// for nothing; safety does not rest on it (the leader guard refuses a write once the lock session is gone).
    /// </summary>
    public static readonly TimeSpan CheckTimeout = TimeSpan.FromSeconds(30);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // The API answers first (a standby serves reads), and the address to record is known.
        await WhenStartedAsync(stoppingToken);
        var url = options.AdvertiseUrl ?? BoundUrl();
        NpgsqlConnection? session = null;
        string? followed = "(unknown)";
        var unreachable = false;
        long lastSeq = -1;
        try
        {
            while (!stoppingToken.IsCancellationRequested)
            {
                try
                {
                    if (session is null)
                    {
                        session = store.NewSessionConnection("teal-leader-lock");
                        await session.OpenAsync(stoppingToken);
                    }

                    if (await TryLockAsync(session, stoppingToken))
                    {
                        var lockSession = session;
                        session = null; // Owned by LeadAsync from here on.
                        await LeadAsync(lockSession, url, stoppingToken);
                        return;
                    }

                    var leader = await PostgresStateStore.ReadLeaderUrlAsync(session, stoppingToken);
                    store.Fence = WriteFence.Standby(leader);
                    leadership.Follow(leader);
                    if (leader != followed || unreachable)
                    {
                        LogStandby(leader ?? "none at the moment", url);
                        followed = leader;
                        unreachable = false;
                    }

                    // Events are appended by the leader: wake this server's followers when there are new ones.
                    var seq = await store.LastEventSeqAsync(stoppingToken);
                    if (seq != lastSeq)
                    {
                        lastSeq = seq;
                        signal.Pulse();
                    }
                }
                catch (Exception ex) when (!stoppingToken.IsCancellationRequested && ex is NpgsqlException or TimeoutException or TealException)
                {
                    if (!unreachable)
                    {
                        LogStateUnreachable(ex.Message);
                        unreachable = true;
                    }

                    store.Fence = WriteFence.Standby(null);
                    leadership.Follow(null);
                    await DisposeAsync(session);
                    session = null;
                }

                await Task.Delay(Interval, time, stoppingToken);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Teal is stopping; closing the session below lets a standby take the lock at once.
        }
        finally
        {
            await DisposeAsync(session);
        }
    }

    private static async Task<bool> TryLockAsync(NpgsqlConnection session, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand($"SELECT pg_try_advisory_lock({PostgresStateSchema.LockClass}, {PostgresStateSchema.LeaderLock})", session);
        return (bool)(await command.ExecuteScalarAsync(cancellationToken))!;
    }

    private async Task LeadAsync(NpgsqlConnection session, string url, CancellationToken stoppingToken)
    {
        try
        {
            // A write of the previous leader that passed its guard before its session ended holds
            // the barrier shared until it commits or aborts: wait for it before reading anything.
            await using (var barrier = new NpgsqlCommand($"SELECT pg_advisory_lock({PostgresStateSchema.LockClass}, {PostgresStateSchema.WriteBarrier}); SELECT pg_advisory_unlock({PostgresStateSchema.LockClass}, {PostgresStateSchema.WriteBarrier})", session))
            {
                await barrier.ExecuteNonQueryAsync(stoppingToken);
            }

            store.Fence = WriteFence.Leader(session.ProcessID);
            var host = $"{Environment.MachineName} (pid {Environment.ProcessId})";
            await store.RecordLeaderAsync(url, host, session.ProcessID, stoppingToken);
            leadership.Lead(url);
            LogLeader(url);
            await store.AppendEventAsync(null, EventKinds.LeaderElected, $"{url} leads the control plane ({host})", new Dictionary<string, string> { ["url"] = url, ["host"] = host }, stoppingToken);

            while (true)
            {
                await Task.Delay(Interval, time, stoppingToken);
                using var check = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
                check.CancelAfter(CheckTimeout);
                await using var command = new NpgsqlCommand("SELECT 1", session) { CommandTimeout = (int)CheckTimeout.TotalSeconds };
                await command.ExecuteScalarAsync(check.Token);
            }
        }
        catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
        {
            Lose($"the leader lock session failed: {ex.GetType().Name}: {ex.Message}");
        }
        finally
        {
            await DisposeAsync(session);
        }
    }

    /// <summary>Stops acting at once: no write passes the fence, running work is cancelled, and Teal stops.</summary>
    private void Lose(string reason)
    {
        store.Fence = WriteFence.Standby(null);
        leadership.Lose(reason);
        try
        {
            background.CancelAll();
        }
        catch (ObjectDisposedException)
        {
            // Already shutting down.
        }

        LogLost(reason);
        lifetime.StopApplication();
    }

    private Task WhenStartedAsync(CancellationToken cancellationToken)
    {
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        lifetime.ApplicationStarted.Register(() => started.TrySetResult());
        return started.Task.WaitAsync(cancellationToken);
    }

    private string BoundUrl()
    {
        var address = server.Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault() ?? $"http://{options.Listen}";
        return address.Replace("[::]", "127.0.0.1", StringComparison.Ordinal).Replace("0.0.0.0", "127.0.0.1", StringComparison.Ordinal);
    }

    private static async Task DisposeAsync(NpgsqlConnection? session)
    {
        if (session is not null)
        {
            await session.DisposeAsync();
        }
    }

    [LoggerMessage(EventId = 1910, Level = LogLevel.Information, Message = "This teal serve ({Url}) is the leader of the control plane")]
    private partial void LogLeader(string url);

    [LoggerMessage(EventId = 1911, Level = LogLevel.Information, Message = "This teal serve ({Self}) is a standby; leader: {Leader}")]
    private partial void LogStandby(string leader, string self);

    [LoggerMessage(EventId = 1912, Level = LogLevel.Critical, Message = "Leadership lost: {Reason}; this teal serve stops acting and exits (restart it to run as a standby)")]
    private partial void LogLost(string reason);

    [LoggerMessage(EventId = 1913, Level = LogLevel.Warning, Message = "The state store is unreachable for leader election: {Error}; retrying")]
    private partial void LogStateUnreachable(string error);
}
