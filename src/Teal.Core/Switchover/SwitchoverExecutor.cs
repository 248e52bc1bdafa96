using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Teal.Core.Deployments;
using Teal.Core.Events;
using Teal.Core.State;

namespace Teal.Core.Switchover;

/// <summary>
/// Runs a switchover plan: each step is journaled before it acts; a failure or the timeout
/// before the point of no return undoes every started step in reverse; after it, Teal only rolls
/// forward (retrying until the step succeeds). After a crash, <see cref="RecoverAsync"/> reads
/// the journal and finishes or unwinds.
/// </summary>
/// <remarks>
/// Journal writes are group-committed: "step i completed" and "step i+1 started" go in one
/// state-store transaction together with the deployment's phase, so each step costs one commit
/// inside the write pause, not three. Only the commits recovery depends on after a power
/// failure wait for the disk: before a step with something to undo (pause, fence), and before
/// the point of no return.
/// </remarks>
public sealed partial class SwitchoverExecutor(IStateStore state, IEnumerable<ISwitchoverStepDecorator> decorators, ILogger<SwitchoverExecutor> logger)
{
    /// <summary>How often a step after the point of no return is retried, and an undo before giving up.</summary>
    private static readonly TimeSpan RetryDelay = TimeSpan.FromMilliseconds(500);
    private const int UndoAttempts = 20;

    public async Task<Deployment> RunAsync(SwitchoverContext context, IReadOnlyList<ISwitchoverStep> plan, CancellationToken stopping)
    {
        var steps = Decorate(plan);
        var run = new Run(context, steps);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        deadline.CancelAfter(context.Remaining > TimeSpan.Zero ? context.Remaining : TimeSpan.Zero);

        List<JournalEntry> pending = [];
        for (var i = 0; i < steps.Count;)
        {
            // A step and those that run with it (ISwitchoverStep.RunsWithPrevious) form one group.
            var group = GroupAt(steps, i);
            var beforePointOfNoReturn = !run.PastPointOfNoReturn && !group.Any(g => steps[g].IsPointOfNoReturn);
            var failed = group[0];
            try
            {
                if (beforePointOfNoReturn)
                {
                    await StartAsync(context, run, group, pending, durable: group.Any(g => !steps[g].NothingToUndo), deadline.Token);
                    run.Started.AddRange(group);
                    var executing = group.Select(g => run.TimeAsync(steps[g], () => steps[g].ExecuteAsync(context, deadline.Token))).ToList();
                    try
                    {
                        await Task.WhenAll(executing);
                    }
                    catch
                    {
                        // Blame the first step of the group that did not succeed; WhenAll waited for all of them.
                        failed = group[executing.FindIndex(t => !t.IsCompletedSuccessfully)];
                        throw;
                    }
                }
                else
                {
                    // From the flip on there is no going back: keep trying (a crash here is finished by recovery).
                    run.PastPointOfNoReturn = true;
                    await RetryForwardAsync(context, run, group, pending, stopping);
                    run.Started.AddRange(group);
                }

                pending = [.. group.Select(g => run.Entry(steps[g], JournalAction.Completed))];
                i += group.Count;
            }
            catch (Exception ex) when (beforePointOfNoReturn && !stopping.IsCancellationRequested)
            {
                var step = steps[failed];
                var reason = ex is OperationCanceledException && deadline.IsCancellationRequested
                    ? $"the switchover timeout of {context.Options.Timeout.TotalSeconds:0} s passed during {step.Name}"
                    : $"{step.Name} failed: {ex.Message}";
                LogStepFailed(ex, context.Deployment.Id, step.Name);
                return await RollBackAsync(context, run, reason, pending, failed);
            }
            catch (OperationCanceledException) when (beforePointOfNoReturn && stopping.IsCancellationRequested)
            {
                return await RollBackAsync(context, run, "Teal was shutting down", pending, failed);
            }
        }

        return await FinishAsync(context, run, pending, CancellationToken.None);
    }

    /// <summary>
    /// Finishes a switchover Teal was running when it stopped: rolls forward when the point of no
    /// return had started, otherwise undoes every started step in reverse.
    /// </summary>
    public async Task<Deployment> RecoverAsync(SwitchoverContext context, IReadOnlyList<ISwitchoverStep> plan, IReadOnlyList<JournalEntry> journal, CancellationToken stopping)
    {
        var steps = Decorate(plan);
        var run = new Run(context, steps);
        var entries = journal.Where(e => e.SwitchoverId == context.SwitchoverId).OrderBy(e => e.Seq).ToList();
        if (entries.Count > 0)
        {
            foreach (var (key, value) in entries[^1].Data)
            {
                context.Data[key] = value;
            }
        }

        bool Has(string step, JournalAction action) => entries.Any(e => e.Step == step && e.Action == action);
        var ponr = steps.ToList().FindIndex(s => s.IsPointOfNoReturn);
        for (var i = 0; i < steps.Count; i++)
        {
            if (Has(steps[i].Name, JournalAction.Started))
            {
                run.Started.Add(i);
            }
        }

        var interrupted = run.Started.Count > 0 ? steps[run.Started.Max()].Name : "(none)";
        if (ponr >= 0 && Has(steps[ponr].Name, JournalAction.Started))
        {
            LogRecovering(context.Deployment.Id, interrupted, "rolling forward");
            run.PastPointOfNoReturn = true;
            List<JournalEntry> pending = [];
            for (var i = ponr; i < steps.Count; i++)
            {
                if (Has(steps[i].Name, JournalAction.Completed))
                {
                    continue;
                }

                // One step at a time: after a crash nobody is counting milliseconds.
                await RetryForwardAsync(context, run, [i], pending, stopping);
                pending = [run.Entry(steps[i], JournalAction.Completed)];
            }

            context.Record(EventKinds.SwitchoverPhase, $"Teal restarted during {interrupted} (after the point of no return) and finished the switchover");
            return await FinishAsync(context, run, pending, CancellationToken.None);
        }

        LogRecovering(context.Deployment.Id, interrupted, "rolling back");
        run.Started.RemoveAll(i => Has(steps[i].Name, JournalAction.Undone));
        return await RollBackAsync(context, run, $"Teal stopped during {interrupted}; the switchover was rolled back when it restarted", [], run.Started.Count > 0 ? run.Started.Max() : -1);
    }

    /// <summary>
    /// Journals the group's steps as started (flushed when it holds the point of no return), then
    /// runs them together, each retried on its own until it succeeds.
    /// </summary>
    private async Task RetryForwardAsync(SwitchoverContext context, Run run, List<int> group, List<JournalEntry> pending, CancellationToken stopping)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await StartAsync(context, run, group, pending, durable: group.Any(g => run.Steps[g].IsPointOfNoReturn), stopping);
                break;
            }
            catch (Exception ex) when (!stopping.IsCancellationRequested)
            {
                await ForwardFailedAsync(context, run.Steps[group[0]], ex, attempt, stopping);
            }
        }

        await Task.WhenAll(group.Select(async g =>
        {
            var step = run.Steps[g];
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    await run.TimeAsync(step, () => step.ExecuteAsync(context, stopping));
                    return;
                }
                catch (Exception ex) when (!stopping.IsCancellationRequested)
                {
                    await ForwardFailedAsync(context, step, ex, attempt, stopping);
                }
            }
        }));
    }

    /// <summary>
    /// Prepares the group's steps, then journals them as started together with
    /// <paramref name="pending"/> in one commit; <paramref name="pending"/> is emptied only once
    /// that commit landed, so a retry or a rollback writes nothing twice.
    /// </summary>
    private async Task StartAsync(SwitchoverContext context, Run run, List<int> group, List<JournalEntry> pending, bool durable, CancellationToken cancellationToken)
    {
        foreach (var g in group)
        {
            await run.Steps[g].PrepareAsync(context, cancellationToken);
        }

        await CommitAsync(context, [.. pending, .. group.Select(g => run.Entry(run.Steps[g], JournalAction.Started))], PhaseOf(run.Steps, group), durable, cancellationToken);
        pending.Clear();
    }

    private async Task ForwardFailedAsync(SwitchoverContext context, ISwitchoverStep step, Exception ex, int attempt, CancellationToken stopping)
    {
        LogForwardRetry(ex, context.Deployment.Id, step.Name, attempt);
        if (attempt == 1)
        {
            context.Record(EventKinds.SwitchoverPhase, $"{step.Name} failed after the point of no return ({ex.Message}); Teal keeps retrying");
        }

        await Task.Delay(RetryDelay, context.Time, stopping);
    }

    /// <summary>Step <paramref name="first"/> and the steps right after it that run with it.</summary>
    private static List<int> GroupAt(List<ISwitchoverStep> steps, int first)
    {
        List<int> group = [first];
        // The point of no return always leads its group: what runs before it must be undoable.
        while (group[^1] + 1 < steps.Count && steps[group[^1] + 1].RunsWithPrevious && !steps[group[^1] + 1].IsPointOfNoReturn)
        {
            group.Add(group[^1] + 1);
        }

        return group;
    }

    /// <summary>The deployment's phase while a group runs: its step names, as the API shows them.</summary>
    private static string PhaseOf(IReadOnlyList<ISwitchoverStep> steps, IReadOnlyList<int> group) =>
        string.Join('+', group.Select(g => steps[g].Name));

    private async Task<Deployment> RollBackAsync(SwitchoverContext context, Run run, string reason, List<JournalEntry> pending, int failedIndex)
    {
        var decidedAt = Stopwatch.GetTimestamp();
        if (failedIndex >= 0 && failedIndex < run.Steps.Count)
        {
            pending.Add(run.Entry(run.Steps[failedIndex], JournalAction.Failed));
        }

        var incomplete = new List<string>();
        double? blueWritableMs = null;
        foreach (var i in run.Started.OrderDescending())
        {
            var step = run.Steps[i];
            pending.Add(run.Entry(step, JournalAction.UndoStarted));
            await CommitAsync(context, pending, step.Name, durable: true, CancellationToken.None);
            pending.Clear();
            if (await TryUndoAsync(context, step))
            {
                if (step.UndoReopensBlue)
                {
                    blueWritableMs = Stopwatch.GetElapsedTime(decidedAt).TotalMilliseconds;
                }

                run.Timings.Add(new PhaseTiming(step.Name, "undone", 0));
                pending.Add(run.Entry(step, JournalAction.Undone));
            }
            else
            {
                incomplete.Add(step.Name);
            }
        }

        var rollbackMs = Stopwatch.GetElapsedTime(decidedAt).TotalMilliseconds;
        var fullReason = incomplete.Count == 0
            ? reason
            : $"{reason}; undoing {string.Join(", ", incomplete)} failed — check blue is writable and the endpoints are resumed";
        pending.Add(run.Entry(null, JournalAction.Closed));
        var now = context.Time.GetUtcNow();
        var deployment = context.Current with
        {
            Status = DeploymentStatus.SwitchoverFailed,
            StatusReason = fullReason,
            Switchover = run.State(context.Current.Switchover) with { Outcome = SwitchoverOutcome.RolledBack, Reason = fullReason, FinishedAt = now },
            UpdatedAt = now,
        };
        await state.ApplyAsync(new StateChange { Journal = pending, Deployments = [deployment] }, CancellationToken.None);
        context.Current = deployment;
        var rollbackData = new Dictionary<string, string> { ["reason"] = fullReason, ["rollbackMilliseconds"] = rollbackMs.ToString("0.0", System.Globalization.CultureInfo.InvariantCulture) };
        var writable = string.Empty;
        if (blueWritableMs is { } ms)
        {
            // The bar operators care about: how long after the decision blue took writes again.
            rollbackData["blueWritableMilliseconds"] = ms.ToString("0.0", System.Globalization.CultureInfo.InvariantCulture);
            writable = $" (blue writable again after {ms:0} ms)";
        }

        context.Record(EventKinds.SwitchoverCanceled, $"switchover rolled back in {rollbackMs:0} ms{writable}: {fullReason}", rollbackData);
        await FlushEventsAsync(context);
        LogRolledBack(context.Deployment.Id, fullReason);
        return deployment;
    }

    private async Task<bool> TryUndoAsync(SwitchoverContext context, ISwitchoverStep step)
    {
        for (var attempt = 1; attempt <= UndoAttempts; attempt++)
        {
            // A fresh token: the switchover's own may be the one that was cancelled by the timeout.
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            try
            {
                await step.UndoAsync(context, timeout.Token);
                return true;
            }
            catch (Exception ex)
            {
                LogUndoFailed(ex, context.Deployment.Id, step.Name, attempt);
                await Task.Delay(RetryDelay, context.Time, CancellationToken.None);
            }
        }

        return false;
    }

    private async Task<Deployment> FinishAsync(SwitchoverContext context, Run run, List<JournalEntry> pending, CancellationToken cancellationToken)
    {
        pending.Add(run.Entry(null, JournalAction.Closed));
        var now = context.Time.GetUtcNow();
        var switchover = run.State(context.Current.Switchover) with
        {
            Outcome = SwitchoverOutcome.Completed,
            FinishedAt = now,
            BlueFinalPosition = context.Data.GetValueOrDefault(SwitchoverData.BlueFinalPosition),
            GreenPosition = context.Data.GetValueOrDefault(SwitchoverData.GreenPosition),
        };
        var deployment = context.Current with
        {
            Status = DeploymentStatus.SwitchoverCompleted,
            StatusReason = null,
            Replication = context.Current.Replication with { State = ReplicationState.Stopped, Reason = "forward replication was dropped at switchover", LagBytes = null, LagSeconds = null, RetainedBytes = null },
            Switchover = switchover,
            UpdatedAt = now,
        };
        await state.ApplyAsync(new StateChange { Journal = pending, Deployments = [deployment] }, cancellationToken);
        context.Current = deployment;
        var pause = switchover.WritePauseMilliseconds is { } ms ? $"; clients were paused for {ms:0} ms" : string.Empty;
        context.Record(
            EventKinds.SwitchoverCompleted,
            $"switchover completed: '{context.Data.GetValueOrDefault(SwitchoverData.BlueName, context.BlueName)}' is now green{pause}",
            run.TimingData());
        await FlushEventsAsync(context);
        LogCompleted(context.Deployment.Id, switchover.WritePauseMilliseconds ?? 0);
        return deployment;
    }

    /// <summary>
    /// Journal entries plus the deployment's current phase, in one transaction; flushed to disk
    /// when <paramref name="durable"/> (see <see cref="ISwitchoverStep.NothingToUndo"/> for when it need not be).
    /// </summary>
    private async Task CommitAsync(SwitchoverContext context, List<JournalEntry> entries, string phase, bool durable, CancellationToken cancellationToken)
    {
        var deployment = context.Current with { Switchover = context.Current.Switchover! with { Phase = phase } };
        await state.ApplyAsync(new StateChange { Journal = [.. entries], Deployments = [deployment], Durable = durable }, cancellationToken);
        context.Current = deployment;
    }

    private async Task FlushEventsAsync(SwitchoverContext context)
    {
        while (context.Events.TryDequeue(out var e))
        {
            var data = new Dictionary<string, string>(e.Data) { ["at"] = e.At.ToString("O", System.Globalization.CultureInfo.InvariantCulture) };
            await state.AppendEventAsync(context.Deployment.Id, e.Kind, e.Message, data, CancellationToken.None);
        }
    }

    private List<ISwitchoverStep> Decorate(IReadOnlyList<ISwitchoverStep> plan) =>
        plan.Select(step => decorators.Aggregate(step, (s, d) => d.Decorate(s))).ToList();

    /// <summary>What one run (or recovery) of a plan has done so far.</summary>
    private sealed class Run(SwitchoverContext context, IReadOnlyList<ISwitchoverStep> steps)
    {
        public IReadOnlyList<ISwitchoverStep> Steps => steps;

        public List<int> Started { get; } = [];

        public List<PhaseTiming> Timings { get; } = [];

        public bool PastPointOfNoReturn { get; set; }

        private long? _pauseStarted;
        private long? _resumed;
        private DateTimeOffset? _pausedAt;
        private DateTimeOffset? _resumedAt;

        public JournalEntry Entry(ISwitchoverStep? step, JournalAction action) =>
            new(context.Deployment.Id, context.SwitchoverId, step?.Name ?? "switchover", action, context.Time.GetUtcNow())
            {
                Data = new Dictionary<string, string>(context.Data),
            };

        public async Task TimeAsync(ISwitchoverStep step, Func<Task> execute)
        {
            var start = Stopwatch.GetTimestamp();
            if (step.Name == "pause-endpoints")
            {
                _pauseStarted = start;
                _pausedAt = context.Time.GetUtcNow();
            }

            await execute();
            var end = Stopwatch.GetTimestamp();
            if (step.Name == "resume-endpoints")
            {
                _resumed = end;
                _resumedAt = context.Time.GetUtcNow();
            }

            lock (Timings)
            {
                // Steps of one group run at once: they are recorded in the order they finish.
                Timings.Add(new PhaseTiming(step.Name, "done", Stopwatch.GetElapsedTime(start, end).TotalMilliseconds));
            }
        }

        public SwitchoverState State(SwitchoverState? current) =>
            (current ?? new SwitchoverState(context.SwitchoverId, context.Time.GetUtcNow(), (int)context.Options.Timeout.TotalSeconds)) with
            {
                Phases = [.. current?.Phases ?? [], .. Timings],
                WritePauseMilliseconds = _pauseStarted is { } p && _resumed is { } r ? Stopwatch.GetElapsedTime(p, r).TotalMilliseconds : current?.WritePauseMilliseconds,
                PausedAt = _pausedAt ?? current?.PausedAt,
                ResumedAt = _resumedAt ?? current?.ResumedAt,
            };

        public Dictionary<string, string> TimingData() =>
            Timings.ToDictionary(t => "ms." + t.Step, t => t.Milliseconds.ToString("0.0", System.Globalization.CultureInfo.InvariantCulture));
    }

    [LoggerMessage(EventId = 1501, Level = LogLevel.Warning, Message = "Switchover of {Id}: step {Step} failed; rolling back")]
    private partial void LogStepFailed(Exception exception, DeploymentId id, string step);

    [LoggerMessage(EventId = 1502, Level = LogLevel.Error, Message = "Switchover of {Id}: step {Step} failed after the point of no return (attempt {Attempt}); retrying")]
    private partial void LogForwardRetry(Exception exception, DeploymentId id, string step, int attempt);

    [LoggerMessage(EventId = 1503, Level = LogLevel.Error, Message = "Switchover of {Id}: undoing {Step} failed (attempt {Attempt})")]
    private partial void LogUndoFailed(Exception exception, DeploymentId id, string step, int attempt);

    [LoggerMessage(EventId = 1504, Level = LogLevel.Warning, Message = "Switchover of {Id} rolled back: {Reason}")]
    private partial void LogRolledBack(DeploymentId id, string reason);

    [LoggerMessage(EventId = 1505, Level = LogLevel.Information, Message = "Switchover of {Id} completed; write pause {PauseMs:0} ms")]
    private partial void LogCompleted(DeploymentId id, double pauseMs);

    [LoggerMessage(EventId = 1506, Level = LogLevel.Warning, Message = "Switchover of {Id} was interrupted during {Step}; {What}")]
    private partial void LogRecovering(DeploymentId id, string step, string what);
}
