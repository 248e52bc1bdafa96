using Microsoft.Extensions.Logging;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Core.Events;
using Teal.Core.State;

namespace Teal.Core.Deployments;

/// <summary>
/// Watches every deployment whose replication runs: once per poll interval it writes the
/// heartbeat on blue, reads lag, worker health, DDL seen and skipped tables, stores the figures
/// and records an event when the replication state changes (DEGRADED with its reason).
/// Deployments are read concurrently so one unreachable server does not stall the others.
/// </summary>
public sealed partial class ReplicationMonitor(IStateStore state, DeploymentRecorder recorder, DeploymentLinks links, CreateOptions options, Endpoints.ReaderRoutes readerRoutes, ILogger<ReplicationMonitor> logger)
{
    /// <summary>Statuses in which forward replication runs and the monitor looks after it.</summary>
    private static readonly HashSet<DeploymentStatus> Watched = [DeploymentStatus.Available, DeploymentStatus.SwitchoverFailed];

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        using var timer = new PeriodicTimer(options.PollInterval, recorder.Time);
        do
        {
            try
            {
                await PollOnceAsync(cancellationToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                LogPollFailed(ex);
            }
        }
        while (await timer.WaitForNextTickAsync(cancellationToken));
    }

    /// <summary>One round over all watched deployments.</summary>
    public async Task PollOnceAsync(CancellationToken cancellationToken)
    {
        var deployments = await state.ListDeploymentsAsync(cancellationToken);
        await Task.WhenAll(deployments.Where(IsWatched).Select(d => PollIfFreeAsync(d, cancellationToken)));
    }

    /// <summary>
    /// A scheduled round skips a deployment whose links someone holds (a password rotation, a
    /// delete, a link being closed): the holder changes what the round would read, and the next
    /// round reads the outcome. Waiting instead would hold up the whole round behind a delete.
    /// </summary>
    private async Task PollIfFreeAsync(Deployment deployment, CancellationToken cancellationToken)
    {
        await using var hold = links.TryHold(deployment.Id);
        if (hold is not null)
        {
            await PollHeldAsync(deployment, cancellationToken);
        }
    }

    /// <summary>
    /// Forward replication before a switchover (or after one rolled back), and reverse
    /// replication (green → old blue) after a switchover until a switchback or <c>teal finish</c>.
    /// </summary>
    public static bool IsWatched(Deployment deployment) =>
        deployment.Reversed
            ? deployment.Status is DeploymentStatus.SwitchoverCompleted or DeploymentStatus.SwitchoverFailed
            : Watched.Contains(deployment.Status);

    /// <summary>
    /// Reads one deployment's replication now, after whoever holds its links is done (a password
    /// rotation reads the state its new link sees).
    /// </summary>
    public async Task PollAsync(Deployment deployment, CancellationToken cancellationToken)
    {
        await using var hold = await links.HoldAsync(deployment.Id, cancellationToken);
        await PollHeldAsync(deployment, cancellationToken);
    }

    private async Task PollHeldAsync(Deployment listed, CancellationToken cancellationToken)
    {
        // Read again under the hold: the deployment may have changed while the previous holder
        // ran (a delete marks it DELETING first, and a heartbeat written then would recreate
        // what the delete removes).
        if (await state.GetDeploymentAsync(listed.Id, cancellationToken) is not { } deployment || !IsWatched(deployment) || deployment.Reversed != listed.Reversed)
        {
            return;
        }

        ReplicationStatus status;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(options.StatusTimeout);
        try
        {
            var link = await links.GetAsync(deployment, timeout.Token);
            await link.WriteHeartbeatAsync(timeout.Token);
            var snapshot = await link.ReadStatusAsync(timeout.Token);
            status = ToStatus(snapshot, recorder.Time.GetUtcNow(), deployment.Name) with { CdcSlots = CdcSlotsOf(snapshot, deployment) };
            if (deployment.Reversed && status.State == ReplicationState.Replicating)
            {
                // The link runs green → old blue: healthy replication is the reverse kind.
                status = status with { State = ReplicationState.ReverseReplicating };
            }
        }
        catch (Exception ex) when (ex is TealException || (ex is OperationCanceledException && !cancellationToken.IsCancellationRequested) || IsDatabaseError(ex))
        {
            var reason = ex is OperationCanceledException ? $"status not readable within {options.StatusTimeout.TotalSeconds:0} s" : ex.Message;
            status = deployment.Replication with { State = ReplicationState.Stopped, Reason = reason, ObservedAt = recorder.Time.GetUtcNow() };
        }

        var readers = await ReadReadersAsync(deployment, timeout.Token);
        var previous = deployment.Replication;
        var updated = await recorder.UpdateAsync(
            deployment.Id,
            d => IsWatched(d) && d.Reversed == deployment.Reversed ? d with { Replication = status, Readers = readers ?? d.Readers } : d,
            cancellationToken);
        if (!IsWatched(updated) || updated.Reversed != deployment.Reversed)
        {
            return;
        }

        if (await RecordTransitionAsync(recorder, deployment.Id, previous, status, cancellationToken))
        {
            LogStateChanged(deployment.Id, previous.State, status.State, status.Reason);
        }

        await RecordReplicatedDdlAsync(deployment.Id, previous, status, cancellationToken);
        if (readers is not null && Endpoints.ReaderRoutes.StreamingChanged(deployment.Readers, readers))
        {
            try
            {
                // Read for deployment.Green (production's name once switched over).
                await readerRoutes.RefreshAsync(deployment.Green, cancellationToken);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                LogReaderRoutesFailed(ex, deployment.Id);
            }
        }
    }

    /// <summary>
    /// Green's readers as green sees them (green is the link's blue side while reversed); null
    /// keeps the last figures when they cannot be read now (the replication status says why).
    /// </summary>
    private async Task<IReadOnlyList<ReaderStatus>?> ReadReadersAsync(Deployment deployment, CancellationToken cancellationToken)
    {
        if (deployment.TargetReaders == 0)
        {
            return null;
        }

        try
        {
            var link = await links.GetAsync(deployment, cancellationToken);
            return await GreenTopology.ReadAsync(state, link, deployment.Green, deployment.Reversed ? Engines.Side.Blue : Engines.Side.Green, cancellationToken);
        }
        catch (Exception ex) when (ex is TealException || ex is OperationCanceledException && !cancellationToken.IsCancellationRequested || IsDatabaseError(ex))
        {
            return null;
        }
    }

    /// <summary>DDL that replication carries by itself (binlog engines) is an event, not a degradation.</summary>
    private async Task RecordReplicatedDdlAsync(DeploymentId id, ReplicationStatus previous, ReplicationStatus current, CancellationToken cancellationToken)
    {
        var seen = previous.ReplicatedDdl.Count == 0 ? 0 : previous.ReplicatedDdl.Max(d => d.Id);
        if (current.ReplicatedDdl.Count > 0 && current.ReplicatedDdl.Max(d => d.Id) < seen)
        {
            // The link was recreated (Teal restarted): its ids started again.
            seen = 0;
        }

        foreach (var ddl in current.ReplicatedDdl.Where(d => d.Id > seen))
        {
            await recorder.EventAsync(
                id,
                EventKinds.DdlReplicated,
                $"DDL on blue, replicated to green: {ddl.Statement}",
                cancellationToken,
                new Dictionary<string, string> { ["command"] = ddl.CommandTag, ["statement"] = ddl.Statement });
        }
    }

    /// <summary>
    /// Maps what the link read onto the stored figures. The reason ends with the command that
    /// fixes it, spelled with the deployment's name, so an operator can act on the line alone.
    /// </summary>
    public static ReplicationStatus ToStatus(ReplicationSnapshot snapshot, DateTimeOffset observedAt, string deploymentName) =>
        new(snapshot.State)
        {
            Reason = WithFix(snapshot, deploymentName),
            LagBytes = snapshot.LagBytes,
            RetainedBytes = snapshot.RetainedBytes,
            LagSeconds = snapshot.LagSeconds,
            WorkerRunning = snapshot.WorkerRunning,
            PendingDdl = snapshot.PendingDdl,
            SkippedTables = snapshot.SkippedTables,
            Stalled = snapshot.Stalled,
            ApplyError = snapshot.ApplyError,
            SchemaDifferences = snapshot.SchemaDifferences,
            LagTransactions = snapshot.LagTransactions,
            ReplicatedDdl = snapshot.ReplicatedDdl,
            ObservedAt = observedAt,
        };

    /// <summary>The link's sides named as instances: its blue is production (green while the deployment is reversed).</summary>
    public static IReadOnlyList<CdcSlotStatus> CdcSlotsOf(ReplicationSnapshot snapshot, Deployment deployment) =>
        [.. snapshot.CdcSlots.Select(s => new CdcSlotStatus(s.Side == Side.Blue ? deployment.Production : deployment.Standby, s.Name)
        {
            Exists = s.Exists,
            Plugin = s.Plugin,
            Active = s.Active,
            ConfirmedPosition = s.ConfirmedPosition,
            LagBytes = s.LagBytes,
        })];

    private static string? WithFix(ReplicationSnapshot snapshot, string name)
    {
        if (snapshot.State != ReplicationState.Degraded || snapshot.Reason is null)
        {
            return snapshot.Reason;
        }

        var replayable = snapshot.PendingDdl.Any(d => d.Replayable);
        var fix = snapshot switch
        {
            { Stalled: true } when replayable => $"`teal apply-ddl {name}` runs the DDL recorded on blue on green (then `teal add-tables {name}` if green still lacks something)",
            { Stalled: true } or { SkippedTables.Count: > 0 } => $"`teal add-tables {name}` builds what green lacks from blue's catalogs and copies new tables",
            _ when replayable => $"`teal apply-ddl {name}` runs it on green through Teal's session; or apply it on green yourself, then `teal ack-ddl {name}`",
            _ => $"`teal add-tables {name}` builds new tables, partitions and columns from blue's catalogs; anything else: apply it on green yourself, then `teal ack-ddl {name}`",
        };
        return $"{snapshot.Reason} (fix: {fix})";
    }

    /// <summary>
    /// Records a change of replication state as an event — the return from DEGRADED or STOPPED
    /// included, whoever noticed it (the monitor, or ack-ddl/add-tables/apply-ddl reading the
    /// state right after acting). Returns whether it recorded one.
    /// </summary>
    public static async Task<bool> RecordTransitionAsync(DeploymentRecorder recorder, DeploymentId id, ReplicationStatus previous, ReplicationStatus current, CancellationToken cancellationToken)
    {
        var reasonChanged = current.State == ReplicationState.Degraded && previous.Reason != current.Reason;
        if (previous.State == current.State && !reasonChanged)
        {
            return false;
        }

        var data = new Dictionary<string, string> { ["from"] = StateName(previous.State), ["to"] = StateName(current.State) };
        if (current.Reason is not null)
        {
            data["reason"] = current.Reason;
        }

        if (current.State == ReplicationState.Degraded)
        {
            await recorder.EventAsync(id, EventKinds.ReplicationDegraded, $"replication degraded: {current.Reason}", cancellationToken, data);
        }
        else
        {
            var why = current.Reason is null ? string.Empty : $": {current.Reason}";
            var recovered = previous.State is ReplicationState.Degraded or ReplicationState.Stopped && current.State is ReplicationState.Replicating or ReplicationState.Syncing or ReplicationState.ReverseReplicating ? "recovered: " : string.Empty;
            await recorder.EventAsync(id, EventKinds.ReplicationStateChanged, $"replication {recovered}{StateName(previous.State)} → {StateName(current.State)}{why}", cancellationToken, data);
        }

        return true;
    }

    private static string StateName(ReplicationState state) => state switch
    {
        ReplicationState.ReverseReplicating => "REVERSE_REPLICATING",
        _ => state.ToString().ToUpperInvariant(),
    };

    /// <summary>Driver errors (connection lost, server error) without referencing a driver from Core.</summary>
    private static bool IsDatabaseError(Exception ex) =>
        ex is System.Data.Common.DbException or IOException or System.Net.Sockets.SocketException or TimeoutException;

    [LoggerMessage(EventId = 1211, Level = LogLevel.Warning, Message = "Deployment {DeploymentId}: reader endpoints not routed again after a reader's streaming changed")]
    private partial void LogReaderRoutesFailed(Exception ex, DeploymentId deploymentId);

    [LoggerMessage(EventId = 1200, Level = LogLevel.Warning, Message = "Replication monitor round failed")]
    private partial void LogPollFailed(Exception exception);

    [LoggerMessage(EventId = 1201, Level = LogLevel.Information, Message = "Deployment {DeploymentId} replication {From} -> {To} ({Reason})")]
    private partial void LogStateChanged(DeploymentId deploymentId, ReplicationState from, ReplicationState to, string? reason);
}
