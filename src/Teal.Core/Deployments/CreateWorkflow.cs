using Microsoft.Extensions.Logging;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Core.Events;
using Teal.Core.Secrets;
using Teal.Core.State;

namespace Teal.Core.Deployments;

/// <summary>
/// Takes a stored deployment from PROVISIONING to AVAILABLE: COPY_SCHEMA, then replication
/// started and COPY_DATA tracked per table, then ANALYZE_GREEN (green's planner statistics and
/// visibility map, so it is ready for production traffic), then CATCH_UP until the lag is small. Resumable
/// after a restart of Teal from whatever task was reached, except a schema copy cut in the
/// middle (green may be half-loaded: the deployment fails with that reason). A failure removes
/// Teal's objects from both sides at once — a slot left on blue would retain WAL — then the
/// managed green Teal built for it (nothing else can use a half-made copy), and leaves only the
/// record: INVALID_CONFIGURATION with the reason, for the operator to read and delete.
/// </summary>
public sealed partial class CreateWorkflow(
    DeploymentRecorder recorder,
    DeploymentLinks links,
    IStateStore state,
    ISecretStore secrets,
    EngineRegistry engines,
    CreateOptions options,
    ILogger<CreateWorkflow> logger)
{
    public async Task RunAsync(DeploymentId id, CancellationToken cancellationToken)
    {
        try
        {
            var deployment = await recorder.GetAsync(id, cancellationToken);
            if (deployment.Status != DeploymentStatus.Provisioning)
            {
                return;
            }

            var link = await links.GetAsync(deployment, cancellationToken);
            await CopySchemaAsync(deployment, link, cancellationToken);
            await CopyDataAsync(id, link, cancellationToken);
            await AnalyzeGreenAsync(id, link, cancellationToken);
            await CreateTopologyAsync(id, link, cancellationToken);
            await CatchUpAsync(id, link, cancellationToken);
            // Materialized views arrive empty on green (replication carries table rows only).
            var views = await link.RefreshMaterializedViewsAsync(cancellationToken);
            if (views.Count > 0)
            {
                await recorder.SetTaskAsync(id, DeploymentTaskKind.CatchUp, t => t with { Message = $"{t.Message}; {views.Count} materialized view(s) refreshed on green" }, cancellationToken);
            }

            await recorder.UpdateAsync(id, d => d with { Status = DeploymentStatus.Available, StatusReason = null }, cancellationToken);
            await recorder.EventAsync(id, EventKinds.Available, "green is in sync; the deployment is AVAILABLE for switchover", cancellationToken);
            LogAvailable(id);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Teal is shutting down; the workflow resumes when it starts again.
        }
        catch (Exception ex)
        {
            await FailAsync(id, ex);
        }
    }

    private async Task CopySchemaAsync(Deployment deployment, IReplicationLink link, CancellationToken cancellationToken)
    {
        var task = deployment.Task(DeploymentTaskKind.CopySchema);
        switch (task?.Status)
        {
            case DeploymentTaskStatus.Completed:
                return;
            case DeploymentTaskStatus.InProgress:
                throw new TealException(
                    "create.interrupted",
                    "Teal stopped while copying the schema to green, which may be half-loaded",
                    "delete the deployment (teal delete ID --delete-target) and create it again");
        }

        await recorder.StartTaskAsync(deployment.Id, DeploymentTaskKind.CopySchema, cancellationToken);
        await link.CopySchemaAsync(cancellationToken);
        await recorder.CompleteTaskAsync(deployment.Id, DeploymentTaskKind.CopySchema, "schema copied to green", cancellationToken);
    }

    private async Task CopyDataAsync(DeploymentId id, IReplicationLink link, CancellationToken cancellationToken)
    {
        var deployment = await recorder.GetAsync(id, cancellationToken);
        if (deployment.Task(DeploymentTaskKind.CopyData)?.Status == DeploymentTaskStatus.Completed)
        {
            return;
        }

        if (deployment.Task(DeploymentTaskKind.CopyData)?.Status != DeploymentTaskStatus.InProgress)
        {
            await recorder.StartTaskAsync(id, DeploymentTaskKind.CopyData, cancellationToken);
        }

        // Idempotent: after a restart it finds the publication and subscription already there.
        await link.StartReplicationAsync(cancellationToken);
        while (true)
        {
            var snapshot = await ReadAsync(id, link, cancellationToken);
            var tables = snapshot.Tables;
            var ready = tables.Count(t => t.State is TableCopyState.Ready or TableCopyState.Copied);
            var percent = tables.Count == 0 ? 100 : 100.0 * ready / tables.Count;
            // Rows and bytes where the copy counts them (Teal's parallel copy; table sizes on green otherwise).
            var copied = tables.Any(t => t.Bytes is not null) ? $" ({tables.Sum(t => t.Rows ?? 0)} rows, {tables.Sum(t => t.Bytes ?? 0) / (1024.0 * 1024):0.0} MB)" : string.Empty;
            await recorder.SetTaskAsync(id, DeploymentTaskKind.CopyData, t => t with { Tables = tables, Percent = Math.Round(percent, 1), Message = $"{ready} of {tables.Count} tables copied{copied}" }, cancellationToken);
            if (snapshot.State == ReplicationState.Stopped)
            {
                throw new TealException("create.replication-stopped", $"replication stopped during the initial copy: {snapshot.Reason}", "check green's server log; then delete the deployment and create it again");
            }

            if (tables.All(t => t.State == TableCopyState.Ready))
            {
                await recorder.CompleteTaskAsync(id, DeploymentTaskKind.CopyData, $"{tables.Count} tables copied", cancellationToken);
                return;
            }

            await Task.Delay(options.PollInterval, recorder.Time, cancellationToken);
        }
    }

    /// <summary>
    /// VACUUM (ANALYZE) on green once every table is copied: a freshly copied table has no
    /// planner statistics (autovacuum gets to it when it gets to it), no visibility map and no
    /// hint bits, so green's first production queries would be planned blind and its first reads
    /// would write every page. Before CATCH_UP, so the lag that builds up meanwhile is caught up
    /// before AVAILABLE. Progress is recorded per table as the engine reports it. Repeated in
    /// whole after a restart of Teal (it is idempotent); a deployment stored before this task
    /// existed gets it added.
    /// </summary>
    private async Task AnalyzeGreenAsync(DeploymentId id, IReplicationLink link, CancellationToken cancellationToken)
    {
        var deployment = await recorder.GetAsync(id, cancellationToken);
        if (deployment.Task(DeploymentTaskKind.AnalyzeGreen)?.Status == DeploymentTaskStatus.Completed)
        {
            return;
        }

        if (deployment.Task(DeploymentTaskKind.AnalyzeGreen) is null)
        {
            await recorder.UpdateAsync(id, d => d.Task(DeploymentTaskKind.AnalyzeGreen) is not null ? d : d with { Tasks = WithAnalyzeTask(d.Tasks) }, cancellationToken);
        }

        await recorder.StartTaskAsync(id, DeploymentTaskKind.AnalyzeGreen, cancellationToken);
        // The engine reports synchronously from its own loop; the records are written in order by one reader.
        var updates = System.Threading.Channels.Channel.CreateUnbounded<TablePrepared>(new() { SingleReader = true });
        var writer = Task.Run(
            async () =>
            {
                await foreach (var t in updates.Reader.ReadAllAsync(cancellationToken))
                {
                    var percent = t.BytesTotal > 0 ? 100.0 * t.BytesDone / t.BytesTotal : 100.0 * t.Done / Math.Max(1, t.Total);
                    await recorder.SetTaskAsync(id, DeploymentTaskKind.AnalyzeGreen, task => task with { Percent = Math.Round(Math.Min(percent, 99.9), 1), Message = $"{t.Done} of {t.Total} tables vacuumed and analyzed on green (last {t.Table})" }, cancellationToken);
                }
            },
            cancellationToken);
        IReadOnlyList<string> tables;
        try
        {
            tables = await link.PrepareGreenAsync(new ChannelProgress<TablePrepared>(updates.Writer), cancellationToken);
        }
        finally
        {
            updates.Writer.TryComplete();
            await writer;
        }

        await recorder.CompleteTaskAsync(id, DeploymentTaskKind.AnalyzeGreen, tables.Count == 0 ? "nothing to vacuum or analyze on green" : $"{tables.Count} tables vacuumed and analyzed on green", cancellationToken);
    }

    /// <summary>
    /// CREATE_TOPOLOGY: green's readers (<c>--target-readers</c>), made once green holds the
    /// copied and analyzed data (less WAL to stream), and followed until each streams from green.
    /// </summary>
    private async Task CreateTopologyAsync(DeploymentId id, IReplicationLink link, CancellationToken cancellationToken)
    {
        var deployment = await recorder.GetAsync(id, cancellationToken);
        if (deployment.TargetReaders == 0 || deployment.Task(DeploymentTaskKind.CreateTopology)?.Status == DeploymentTaskStatus.Completed)
        {
            return;
        }

        await recorder.StartTaskAsync(id, DeploymentTaskKind.CreateTopology, cancellationToken);
        await recorder.SetTaskAsync(id, DeploymentTaskKind.CreateTopology, t => t with { Message = $"copying green into {deployment.TargetReaders} reader(s)" }, cancellationToken);
        var readers = await GreenTopology.CreateAsync(deployment, state, secrets, engines, links, options, cancellationToken);
        var deadline = recorder.Time.GetUtcNow() + options.ReaderStartTimeout;
        while (true)
        {
            var status = await GreenTopology.ReadAsync(state, link, deployment.Green, Side.Green, cancellationToken);
            await recorder.UpdateAsync(id, d => d with { Readers = status }, cancellationToken);
            var streaming = status.Count(r => r.State == "streaming");
            if (streaming == readers.Count)
            {
                await recorder.CompleteTaskAsync(id, DeploymentTaskKind.CreateTopology, $"{readers.Count} reader(s) of green streaming: {string.Join(", ", readers.Select(r => $"{r.Name} ({r.Address})"))}", cancellationToken);
                return;
            }

            if (recorder.Time.GetUtcNow() > deadline)
            {
                throw new TealException("create.readers-not-streaming", $"green's readers did not start streaming within {options.ReaderStartTimeout.TotalSeconds:0} s: {string.Join(", ", status.Where(r => r.State != "streaming").Select(r => $"{r.Name} ({r.State})"))}", "read the readers' server.log beside their data directories; then delete the deployment and create it again");
            }

            await recorder.SetTaskAsync(id, DeploymentTaskKind.CreateTopology, t => t with { Percent = Math.Round(100.0 * streaming / Math.Max(1, readers.Count), 1), Message = $"{streaming} of {readers.Count} reader(s) streaming" }, cancellationToken);
            await Task.Delay(options.PollInterval, recorder.Time, cancellationToken);
        }
    }

    private static List<DeploymentTask> WithAnalyzeTask(IReadOnlyList<DeploymentTask> tasks)
    {
        var list = tasks.ToList();
        var at = list.FindIndex(t => t.Kind == DeploymentTaskKind.CatchUp);
        list.Insert(at < 0 ? list.Count : at, new DeploymentTask(DeploymentTaskKind.AnalyzeGreen, DeploymentTaskStatus.Pending));
        return list;
    }

    private sealed class ChannelProgress<T>(System.Threading.Channels.ChannelWriter<T> writer) : IProgress<T>
    {
        public void Report(T value) => writer.TryWrite(value);
    }

    private async Task CatchUpAsync(DeploymentId id, IReplicationLink link, CancellationToken cancellationToken)
    {
        await recorder.StartTaskAsync(id, DeploymentTaskKind.CatchUp, cancellationToken);
        long? firstLag = null;
        while (true)
        {
            var snapshot = await ReadAsync(id, link, cancellationToken);
            if (snapshot.State == ReplicationState.Stopped)
            {
                throw new TealException("create.replication-stopped", $"replication stopped while catching up: {snapshot.Reason}", "check green's server log; then delete the deployment and create it again");
            }

            var lag = snapshot.LagBytes ?? long.MaxValue;
            firstLag ??= lag;
            if (lag <= options.CatchUpLagBytes && (snapshot.LagSeconds ?? 0) <= options.CatchUpLagSeconds)
            {
                await recorder.CompleteTaskAsync(id, DeploymentTaskKind.CatchUp, $"lag {lag} bytes, {snapshot.LagSeconds ?? 0:0.00} s", cancellationToken);
                return;
            }

            var percent = firstLag is > 0 and < long.MaxValue ? Math.Clamp(100.0 * (firstLag.Value - lag) / firstLag.Value, 0, 99) : 0;
            await recorder.SetTaskAsync(id, DeploymentTaskKind.CatchUp, t => t with { Percent = Math.Round(percent, 1), Message = $"lag {lag} bytes" }, cancellationToken);
            await Task.Delay(options.PollInterval, recorder.Time, cancellationToken);
        }
    }

    /// <summary>Heartbeat, then status; the deployment's replication figures are updated from it.</summary>
    private async Task<ReplicationSnapshot> ReadAsync(DeploymentId id, IReplicationLink link, CancellationToken cancellationToken)
    {
        await link.WriteHeartbeatAsync(cancellationToken);
        var snapshot = await link.ReadStatusAsync(cancellationToken);
        await recorder.UpdateAsync(id, d => d with { Replication = ReplicationMonitor.ToStatus(snapshot, recorder.Time.GetUtcNow(), d.Name) }, cancellationToken);
        return snapshot;
    }

    private async Task FailAsync(DeploymentId id, Exception ex)
    {
        var reason = ex is TealException tex ? tex.Message : $"{ex.GetType().Name}: {ex.Message}";
        LogCreationFailed(ex, id, reason);
        // Nothing here may be cancelled: the cleanup must run even while Teal shuts down.
        var none = CancellationToken.None;
        try
        {
            var deployment = await recorder.GetAsync(id, none);
            var link = await links.GetAsync(deployment, none);
            await link.RemoveAsync(none);
            // Only once Teal's objects are gone: a green removed first would leave its
            // subscription's slot on blue for `teal delete` to find without a link.
            if (await RemoveManagedGreenAsync(deployment) is { } removed)
            {
                reason += $" (managed green {removed} removed)";
            }
        }
        catch (Exception cleanup) when (cleanup is not OutOfMemoryException)
        {
            LogCleanupFailed(cleanup, id);
            reason += $" (cleanup incomplete: {cleanup.Message}; run teal delete to retry it)";
        }

        await recorder.UpdateAsync(
            id,
            d => d with
            {
                Status = DeploymentStatus.InvalidConfiguration,
                StatusReason = reason,
                Replication = d.Replication with { State = ReplicationState.Stopped, Reason = reason },
                Tasks = d.Tasks.Select(t => t.Status == DeploymentTaskStatus.InProgress ? t with { Status = DeploymentTaskStatus.Failed, Message = reason } : t).ToList(),
            },
            none);
        await recorder.EventAsync(id, EventKinds.CreationFailed, $"creation failed: {reason}", none, new Dictionary<string, string> { ["reason"] = reason });
    }

    private async Task<string?> RemoveManagedGreenAsync(Deployment deployment)
    {
        var none = CancellationToken.None;
        if (!deployment.GreenManaged || await state.GetInstanceAsync(deployment.Green, none) is not { Managed: not null } green)
        {
            return null;
        }

        // Readers first: their slots live on green.
        await GreenTopology.RemoveAsync(deployment, state, secrets, engines, links, none);
        await links.ForgetAsync(deployment.Id);
        await engines.Provisioner(green.Engine).RemoveAsync(green, none);
        await state.RemoveInstanceAsync(green.Name, none);
        if (green.SecretRef is not null)
        {
            secrets.Remove(green.SecretRef);
        }

        LogGreenRemoved(deployment.Id, green.Name);
        return green.Name;
    }

    [LoggerMessage(EventId = 1100, Level = LogLevel.Information, Message = "Deployment {DeploymentId} is AVAILABLE")]
    private partial void LogAvailable(DeploymentId deploymentId);

    [LoggerMessage(EventId = 1101, Level = LogLevel.Error, Message = "Creating deployment {DeploymentId} failed: {Reason}")]
    private partial void LogCreationFailed(Exception exception, DeploymentId deploymentId, string reason);

    [LoggerMessage(EventId = 1103, Level = LogLevel.Information, Message = "Removed managed green {Green} of failed deployment {DeploymentId}")]
    private partial void LogGreenRemoved(DeploymentId deploymentId, string green);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Error, Message = "Removing Teal's objects after a failed create of {DeploymentId} failed")]
    private partial void LogCleanupFailed(Exception exception, DeploymentId deploymentId);
}
