using Teal.Core.Errors;
using Teal.Core.Events;
using Teal.Core.State;

namespace Teal.Core.Deployments;

/// <summary>
/// The one way deployments change: read–modify–write inside the state store's write
/// transaction (the monitor, the create workflow and the switchover all update the same record);
/// and the events that go with the changes.
/// </summary>
public sealed class DeploymentRecorder(IStateStore state, TimeProvider time)
{
    public TimeProvider Time => time;

    public async Task<Deployment> GetAsync(DeploymentId id, CancellationToken cancellationToken) =>
        await state.GetDeploymentAsync(id, cancellationToken)
        ?? throw new TealException("deployment.not-found", $"deployment {id} does not exist", "see `teal list`") { Kind = TealErrorKind.NotFound };

    /// <summary>
    /// Applies <paramref name="change"/> to the stored deployment and persists the result, in the
    /// store's write transaction (no writer can overwrite another's update with a stale copy).
    /// </summary>
    public async Task<Deployment> UpdateAsync(DeploymentId id, Func<Deployment, Deployment> change, CancellationToken cancellationToken)
    {
        try
        {
            return await state.UpdateDeploymentAsync(
                id,
                current =>
                {
                    var next = change(current);
                    return ReferenceEquals(next, current) ? current : next with { UpdatedAt = time.GetUtcNow() };
                },
                cancellationToken);
        }
        catch (TealException ex) when (ex.Code == "deployment.not-found")
        {
            throw new TealException("deployment.not-found", $"deployment {id} does not exist", "see `teal list`", ex) { Kind = TealErrorKind.NotFound };
        }
    }

    public Task<Deployment> SetTaskAsync(DeploymentId id, DeploymentTaskKind kind, Func<DeploymentTask, DeploymentTask> change, CancellationToken cancellationToken) =>
        UpdateAsync(id, d => d.Task(kind) is { } task ? d.WithTask(change(task)) : d, cancellationToken);

    public Task<DeploymentEvent> EventAsync(DeploymentId? id, string kind, string message, CancellationToken cancellationToken, IReadOnlyDictionary<string, string>? data = null) =>
        state.AppendEventAsync(id, kind, message, data, cancellationToken);

    /// <summary>Marks a task started and records the event.</summary>
    public async Task StartTaskAsync(DeploymentId id, DeploymentTaskKind kind, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow();
        await SetTaskAsync(id, kind, t => t with { Status = DeploymentTaskStatus.InProgress, StartedAt = now, Percent = 0 }, cancellationToken);
        await EventAsync(id, EventKinds.TaskStarted, $"{TaskNames.Of(kind)} started", cancellationToken, new Dictionary<string, string> { ["task"] = TaskNames.Of(kind) });
    }

    /// <summary>Marks a task completed and records the event.</summary>
    public async Task CompleteTaskAsync(DeploymentId id, DeploymentTaskKind kind, string message, CancellationToken cancellationToken)
    {
        var now = time.GetUtcNow();
        var deployment = await SetTaskAsync(id, kind, t => t with { Status = DeploymentTaskStatus.Completed, CompletedAt = now, Percent = 100, Message = message }, cancellationToken);
        var task = deployment.Task(kind);
        var seconds = task?.StartedAt is { } started ? (now - started).TotalSeconds : 0;
        await EventAsync(
            id,
            EventKinds.TaskCompleted,
            $"{TaskNames.Of(kind)} completed in {seconds:0.0} s: {message}",
            cancellationToken,
            new Dictionary<string, string> { ["task"] = TaskNames.Of(kind), ["seconds"] = seconds.ToString("0.000", System.Globalization.CultureInfo.InvariantCulture) });
    }
}

/// <summary>Task names as they appear in the API and events (PROVISION_GREEN, COPY_DATA, …).</summary>
public static class TaskNames
{
    public static string Of(DeploymentTaskKind kind) => kind switch
    {
        DeploymentTaskKind.ProvisionGreen => "PROVISION_GREEN",
        DeploymentTaskKind.CopySchema => "COPY_SCHEMA",
        DeploymentTaskKind.CopyData => "COPY_DATA",
        DeploymentTaskKind.CatchUp => "CATCH_UP",
        DeploymentTaskKind.CreateTopology => "CREATE_TOPOLOGY",
        DeploymentTaskKind.AnalyzeGreen => "ANALYZE_GREEN",
        _ => kind.ToString(),
    };
}
