using System.Globalization;
using Microsoft.Extensions.Logging;
using Teal.Core.Deployments;
using Teal.Core.Errors;
using Teal.Core.Events;
using Teal.Core.State;
using Teal.Core.Switchover.Steps;

namespace Teal.Core.Switchover;

/// <summary>
/// Runs a switchover plan: each step is journaled before it acts; a failure or the timeout
/// before the point of no return undoes every started step in reverse; after it, Teal only rolls
/// forward — transient errors are retried with capped backoff, a permanent one stops the
/// switchover (<see cref="DeploymentStatus.SwitchoverStopped"/>) until the operator resumes it.
/// After a crash, <see cref="RecoverAsync"/> reads the journal and finishes or unwinds.
/// </summary>
/// <remarks>
/// Journal writes are group-committed: "step i completed" and "step i+1 started" go in one
/// state-store transaction together with the deployment's phase and the timings so far, so each
/// step costs one commit inside the write pause, not three. Only the commits recovery depends on
/// after a power failure wait for the disk: before a step with something to undo (pause, fence),
/// and before the point of no return. Deployment writes are changes applied by the store to the
/// record as stored (<see cref="DeploymentChange"/>), so a concurrent writer's update is kept.
/// </remarks>
public sealed partial class SwitchoverExecutor(IStateStore state, IEnumerable<ISwitchoverStepDecorator> decorators, TransientErrors transient, ILogger<SwitchoverExecutor> logger)
{
    /// <summary>First wait before a retry (after the point of no return, or of an undo); doubled each attempt up to <see cref="MaxRetryDelay"/>.</summary>
    public static readonly TimeSpan FirstRetryDelay = TimeSpan.FromMilliseconds(500);

    public static readonly TimeSpan MaxRetryDelay = TimeSpan.FromSeconds(10);

    /// <summary>How long one undo attempt may take (its own token: the switchover's may be the one the timeout cancelled).</summary>
    public static readonly TimeSpan UndoAttemptTimeout = TimeSpan.FromSeconds(10);

    /// <summary>Undo attempts made while Teal shuts down before the rest is left to the next start's recovery.</summary>
    private const int UndoAttemptsWhileStopping = 3;

    /// <summary>The wait before retry number <paramref name="attempt"/> + 1: 0.5 s, 1 s, 2 s, … capped at 10 s.</summary>
    public static TimeSpan Backoff(int attempt) =>
        TimeSpan.FromMilliseconds(Math.Min(FirstRetryDelay.TotalMilliseconds * Math.Pow(2, Math.Min(attempt - 1, 16)), MaxRetryDelay.TotalMilliseconds));

    public async Task<Deployment> RunAsync(SwitchoverContext context, IReadOnlyList<ISwitchoverStep> plan, CancellationToken stopping)
    {
        ArgumentNullException.ThrowIfNull(context);
        var steps = Decorate(plan);
        var run = new Run(context, steps);
        using var timeout = new CancellationTokenSource(context.Remaining > TimeSpan.Zero ? context.Remaining : TimeSpan.Zero, context.Time);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stopping, timeout.Token);

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
                    // A step whose start an earlier flushed commit journaled needs no flush of its own.
                    var durable = group.Any(g => !steps[g].NothingToUndo && !run.JournaledAhead.Contains(g));
                    var ahead = durable ? AheadOf(steps, group[^1] + 1) : [];
                    await StartAsync(context, run, group, pending, durable, deadline.Token, ahead);
                    run.JournaledAhead.UnionWith(ahead);
                    run.WorkAhead(ahead, deadline.Token);
                    run.Started.AddRange(group.Where(g => !run.Started.Contains(g)).ToList());
                    var executing = group.Select(g => ExecuteAsync(context, run, steps[g], deadline.Token)).ToList();
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
                    // From the flip on there is no going back (a crash here is finished by recovery).
                    run.PastPointOfNoReturn = true;
                    await RetryForwardAsync(context, run, group, pending, stopping);
                    run.Started.AddRange(group);
                }

                pending = [.. group.Select(g => run.Entry(steps[g], JournalAction.Completed))];
                i += group.Count;
            }
            catch (SwitchoverStop stop)
            {
                return await StopAsync(context, run, pending, stop);
            }
            catch (Exception ex) when (beforePointOfNoReturn && !stopping.IsCancellationRequested)
            {
                var step = steps[failed];
                var reason = ex is OperationCanceledException && timeout.IsCancellationRequested
                    ? $"the switchover timeout of {context.Options.Timeout.TotalSeconds:0} s passed during {step.Name}"
                    : $"{step.Name} failed: {ex.Message}";
                LogStepFailed(ex, context.Deployment.Id, step.Name);
                return await RollBackAsync(context, run, reason, pending, failed, stopping);
            }
            catch (OperationCanceledException) when (beforePointOfNoReturn && stopping.IsCancellationRequested)
            {
                return await RollBackAsync(context, run, $"Teal was shutting down during {steps[failed].Name}", pending, failed, stopping);
            }
        }

        return await FinishAsync(context, run, pending);
    }

    /// <summary>
    /// Finishes a switchover Teal was running when it stopped (or one stopped by a permanent
    /// error, on <c>--resume</c>): rolls forward when the point of no return had started,
    /// otherwise undoes every started step in reverse.
    /// </summary>
    public async Task<Deployment> RecoverAsync(SwitchoverContext context, IReadOnlyList<ISwitchoverStep> plan, IReadOnlyList<JournalEntry> journal, CancellationToken stopping)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(journal);
        var steps = Decorate(plan);
        var run = new Run(context, steps);
        var entries = journal.Where(e => e.SwitchoverId == context.SwitchoverId).OrderBy(e => e.Seq).ToList();
        if (entries.Count > 0)
        {
            context.Restore(entries[^1].Data);
        }

        bool Has(string step, JournalAction action) => entries.Any(e => e.Step == step && e.Action == action);
        var ponr = steps.FindIndex(s => s.IsPointOfNoReturn);
        for (var i = 0; i < steps.Count; i++)
        {
            if (Has(steps[i].Name, JournalAction.Started))
            {
                run.Started.Add(i);
            }
        }

        // The first step started and not completed is the one that was running (a step journaled
        // ahead, ISwitchoverStep.JournaledAhead, is started before the steps that precede it end);
        // with none, the last one started. Before the first journal entry the switchover was in
        // its guardrails (the phase it was accepted with).
        var running = run.Started.Where(i => !Has(steps[i].Name, JournalAction.Completed)).DefaultIfEmpty(run.Started.Count > 0 ? run.Started.Max() : -1).Min();
        var interrupted = running >= 0 ? steps[running].Name : context.Current.Switchover?.Phase ?? steps[0].Name;
        if (ponr >= 0 && Has(steps[ponr].Name, JournalAction.Started))
        {
            LogRecovering(context.Deployment.Id, interrupted, "rolling forward");
            run.PastPointOfNoReturn = true;
            try
            {
                if (!steps.Any(s => s.EndsWritePause && Has(s.Name, JournalAction.Completed)))
                {
                    // Clients must not reach the fenced old blue while the flip is finished: a proxy
                    // endpoint came up holding, a PgBouncer kept its clients while Teal was down.
                    await RetryAsync(context, "pause-endpoints", () => HoldAndDrainAsync(context, stopping), stopping);
                }

                await RecordLostOutcomesAsync(context, steps.Where(s => Has(s.Name, JournalAction.Completed)));
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
                return await FinishAsync(context, run, pending);
            }
            catch (SwitchoverStop stop)
            {
                return await StopAsync(context, run, [], stop);
            }
        }

        LogRecovering(context.Deployment.Id, interrupted, "rolling back");
        run.Started.RemoveAll(i => Has(steps[i].Name, JournalAction.Undone));
        return await RollBackAsync(context, run, $"Teal stopped during {interrupted}; the switchover was rolled back when it restarted", [], running, stopping);
    }

    /// <summary>Runs one step, then records its outcome (its event, persisted after the pause).</summary>
    private static async Task ExecuteAsync(SwitchoverContext context, Run run, ISwitchoverStep step, CancellationToken cancellationToken)
    {
        await run.TimeAsync(step, async () =>
        {
            await run.AheadOf(step);
            await step.ExecuteAsync(context, cancellationToken);
        });
        step.RecordOutcome(context);
    }

    /// <summary>
    /// Journals the group's steps as started (flushed when it holds the point of no return), then
    /// runs them together, each retried on its own while its errors are transient. A permanent
    /// error stops the group (<see cref="SwitchoverStop"/>).
    /// </summary>
    private async Task RetryForwardAsync(SwitchoverContext context, Run run, List<int> group, List<JournalEntry> pending, CancellationToken stopping)
    {
        var lead = run.Steps[group[0]];
        await RetryAsync(context, lead.Name, () => StartAsync(context, run, group, pending, durable: group.Any(g => run.Steps[g].IsPointOfNoReturn), stopping), stopping);

        // A permanent failure of one step of the group stops the others' retries too.
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        var running = group.Select(async g =>
        {
            var step = run.Steps[g];
            try
            {
                await RetryAsync(context, step.Name, () => ExecuteAsync(context, run, step, stop.Token), stop.Token);
            }
            catch (SwitchoverStop)
            {
                await stop.CancelAsync();
                throw;
            }
        }).ToList();
        try
        {
            await Task.WhenAll(running);
        }
        catch when (running.Select(t => t.Exception?.InnerException).OfType<SwitchoverStop>().FirstOrDefault() is { } stopped)
        {
            throw stopped;
        }
    }

    /// <summary>
    /// Runs <paramref name="action"/> until it succeeds: a transient error is retried after
    /// <see cref="Backoff"/> (an event on the first attempt and every tenth), a permanent one
    /// becomes a <see cref="SwitchoverStop"/>.
    /// </summary>
    private async Task RetryAsync(SwitchoverContext context, string step, Func<Task> action, CancellationToken cancellationToken)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await action();
                return;
            }
            catch (Exception ex) when (!cancellationToken.IsCancellationRequested && ex is not SwitchoverStop)
            {
                if (!transient.IsTransient(ex))
                {
                    LogForwardStopped(ex, context.Deployment.Id, step);
                    throw new SwitchoverStop(step, ex);
                }

                var delay = Backoff(attempt);
                LogForwardRetry(ex, context.Deployment.Id, step, attempt);
                if (attempt == 1 || attempt % 10 == 0)
                {
                    // Persisted now, not after the pause: an operator watching `teal events` must see it.
                    await TryAppendEventAsync(
                        context,
                        EventKinds.SwitchoverRetrying,
                        $"{step} failed after the point of no return ({ex.Message}); the error is transient, Teal retries (attempt {attempt}, next in {delay.TotalSeconds:0.#} s)",
                        new Dictionary<string, string> { ["step"] = step, ["attempt"] = attempt.ToString(CultureInfo.InvariantCulture), ["error"] = ex.Message });
                }

                await Task.Delay(delay, context.Time, cancellationToken);
            }
        }
    }

    /// <summary>
    /// Prepares the group's steps, then journals them as started together with
    /// <paramref name="pending"/> in one commit; <paramref name="pending"/> is emptied only once
    /// that commit landed, so a retry or a rollback writes nothing twice.
    /// </summary>
    private async Task StartAsync(SwitchoverContext context, Run run, List<int> group, List<JournalEntry> pending, bool durable, CancellationToken cancellationToken, IReadOnlyList<int>? ahead = null)
    {
        foreach (var g in group)
        {
            await run.Steps[g].PrepareAsync(context, cancellationToken);
        }

        List<JournalEntry> entries = [.. pending, .. group.Where(g => !run.JournaledAhead.Contains(g)).Select(g => run.Entry(run.Steps[g], JournalAction.Started))];
        entries.AddRange((ahead ?? []).Select(a => run.Entry(run.Steps[a], JournalAction.Started)));
        await CommitAsync(context, run, entries, PhaseOf(run.Steps, group), durable, cancellationToken);
        pending.Clear();
    }

    /// <summary>
    /// Steps from <paramref name="first"/> on whose start goes ahead into a flushed commit
    /// (<see cref="ISwitchoverStep.JournaledAhead"/>): up to the first later step that needs a
    /// flushed commit of its own, never past the point of no return.
    /// </summary>
    private static List<int> AheadOf(List<ISwitchoverStep> steps, int first)
    {
        List<int> ahead = [];
        for (var j = first; j < steps.Count && !steps[j].IsPointOfNoReturn; j++)
        {
            if (steps[j].JournaledAhead)
            {
                ahead.Add(j);
            }
            else if (!steps[j].NothingToUndo)
            {
                break;
            }
        }

        return ahead;
    }

    /// <summary>Pauses every endpoint (idempotent) and drains what is still connected through it.</summary>
    private static async Task HoldAndDrainAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        var hold = PauseEndpointsStep.HoldDeadline(context);
        await Task.WhenAll(context.Endpoints.Select(e => e.PauseAsync(hold, cancellationToken)));
        await Task.WhenAll(context.Endpoints.Select(e => e.DrainAsync(context.Options.DrainBudget, cancellationToken)));
    }

    /// <summary>
    /// Records again the outcomes of steps that completed before a crash (or a stop): their
    /// events were queued for after the pause. Events this switchover already persisted are not repeated.
    /// </summary>
    private async Task RecordLostOutcomesAsync(SwitchoverContext context, IEnumerable<ISwitchoverStep> completed)
    {
        var persisted = (await state.ListEventsAsync(context.Deployment.Id, 0, int.MaxValue, CancellationToken.None))
            .Where(e => e.Data.GetValueOrDefault(SwitchoverIdKey) == context.SwitchoverId)
            .Select(e => e.Kind)
            .ToHashSet(StringComparer.Ordinal);
        foreach (var step in completed)
        {
            step.RecordOutcome(context);
        }

        var recorded = context.Events.ToList();
        context.Events.Clear();
        foreach (var e in recorded.Where(e => !persisted.Contains(e.Kind)))
        {
            context.Events.Enqueue(e);
        }
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

    private async Task<Deployment> RollBackAsync(SwitchoverContext context, Run run, string reason, List<JournalEntry> pending, int failedIndex, CancellationToken stopping)
    {
        var decidedAt = context.Time.GetTimestamp();
        // Work a step began ahead ends before anything is undone, so its undo comes after it.
        await run.SettleAheadAsync();
        if (failedIndex >= 0 && failedIndex < run.Steps.Count)
        {
            pending.Add(run.Entry(run.Steps[failedIndex], JournalAction.Failed));
        }

        // Steps journaled ahead that this run never started have nothing to undo: recorded undone as they are.
        foreach (var i in run.JournaledAhead.Except(run.Started).OrderDescending())
        {
            pending.Add(run.Entry(run.Steps[i], JournalAction.Undone));
        }

        double? blueWritableMs = null;
        foreach (var i in run.Started.OrderDescending())
        {
            var step = run.Steps[i];
            pending.Add(run.Entry(step, JournalAction.UndoStarted));
            await CommitAsync(context, run, pending, step.Name, durable: true, CancellationToken.None);
            pending.Clear();
            if (!await UndoUntilDoneAsync(context, step, stopping))
            {
                // Teal is stopping with this undo still failing: the journal stays open, and the
                // next start's recovery goes on undoing. Held clients stay held meanwhile.
                LogRollbackInterrupted(context.Deployment.Id, step.Name);
                return context.Current;
            }

            if (step.UndoReopensBlue)
            {
                blueWritableMs = context.Time.GetElapsedTime(decidedAt).TotalMilliseconds;
            }

            run.Timings.Add(new PhaseTiming(step.Name, "undone", 0));
            pending.Add(run.Entry(step, JournalAction.Undone));
        }

        // Every step is undone, blue is writable: let go of endpoints held by no step of this run
        // (after a crash they come up holding before recovery decides).
        await ResumeHeldAsync(context);
        var rollbackMs = context.Time.GetElapsedTime(decidedAt).TotalMilliseconds;
        pending.Add(run.Entry(null, JournalAction.Closed));
        var rollbackData = new Dictionary<string, string> { ["reason"] = reason, ["rollbackMilliseconds"] = rollbackMs.ToString("0.0", CultureInfo.InvariantCulture) };
        var writable = string.Empty;
        if (blueWritableMs is { } ms)
        {
            // The bar operators care about: how long after the decision blue took writes again.
            rollbackData["blueWritableMilliseconds"] = ms.ToString("0.0", CultureInfo.InvariantCulture);
            writable = $" (blue writable again after {ms:0} ms)";
        }

        context.Record(EventKinds.SwitchoverCanceled, $"switchover rolled back in {rollbackMs:0} ms{writable}: {reason}", rollbackData);
        var now = context.Time.GetUtcNow();
        var deployment = await UpdateAsync(
            context,
            d => d with
            {
                Status = DeploymentStatus.SwitchoverFailed,
                StatusReason = reason,
                Switchover = run.State(d.Switchover) with { Outcome = SwitchoverOutcome.RolledBack, Reason = reason, Hint = null, FinishedAt = now },
                UpdatedAt = now,
            },
            pending,
            durable: true,
            withEvents: true);
        LogRolledBack(context.Deployment.Id, reason);
        return deployment;
    }

    /// <summary>
    /// Undoes <paramref name="step"/>, retrying with backoff until it succeeds — an event each
    /// failed attempt. The steps before it are not undone meanwhile: with blue still fenced, the
    /// endpoints keep holding their clients (until their deadline, then a clear error) rather than
    /// resume them onto a read-only blue. False when Teal stops before the undo succeeded.
    /// </summary>
    private async Task<bool> UndoUntilDoneAsync(SwitchoverContext context, ISwitchoverStep step, CancellationToken stopping)
    {
        for (var attempt = 1; ; attempt++)
        {
            using var timeout = new CancellationTokenSource(UndoAttemptTimeout, context.Time);
            try
            {
                await step.UndoAsync(context, timeout.Token);
                return true;
            }
            catch (Exception ex)
            {
                var delay = Backoff(attempt);
                LogUndoFailed(ex, context.Deployment.Id, step.Name, attempt);
                await TryAppendEventAsync(
                    context,
                    EventKinds.SwitchoverRetrying,
                    $"undoing {step.Name} failed (attempt {attempt}): {ex.Message}; Teal retries in {delay.TotalSeconds:0.#} s and undoes nothing before it succeeds",
                    new Dictionary<string, string> { ["step"] = step.Name, ["attempt"] = attempt.ToString(CultureInfo.InvariantCulture), ["error"] = ex.Message, ["undo"] = "true" });
                if (stopping.IsCancellationRequested)
                {
                    if (attempt >= UndoAttemptsWhileStopping)
                    {
                        return false;
                    }

                    continue;
                }

                try
                {
                    await Task.Delay(delay, context.Time, stopping);
                }
                catch (OperationCanceledException)
                {
                    // Teal is stopping: a few more attempts without waiting, then recovery takes over.
                }
            }
        }
    }

    /// <summary>
    /// A step after the point of no return failed for good: the switchover stops there, the
    /// deployment says which step, the error and the fix, and the journal stays open for
    /// <c>--resume</c> (or the next start's recovery, which finishes the same way).
    /// </summary>
    private async Task<Deployment> StopAsync(SwitchoverContext context, Run run, List<JournalEntry> pending, SwitchoverStop stop)
    {
        var error = stop.InnerException!; // SwitchoverStop always wraps the failure.
        var hint = HintOf(error);
        var name = context.Current.Name;
        var fix = $"{(hint is null ? "fix the cause" : hint.TrimEnd('.'))}; then run `teal switchover {name} --resume`";
        var reason = $"{stop.Step} failed after the point of no return: {error.Message}";
        var step = run.Steps.FirstOrDefault(s => s.Name == stop.Step);
        if (step is not null)
        {
            pending.Add(run.Entry(step, JournalAction.Failed));
        }

        context.Record(
            EventKinds.SwitchoverStopped,
            $"switchover stopped at {stop.Step}: {error.Message}; {fix}",
            new Dictionary<string, string> { ["step"] = stop.Step, ["error"] = error.Message, ["hint"] = fix });
        var now = context.Time.GetUtcNow();
        var deployment = await UpdateAsync(
            context,
            d => d with
            {
                Status = DeploymentStatus.SwitchoverStopped,
                StatusReason = reason,
                Switchover = run.State(d.Switchover) with { Outcome = SwitchoverOutcome.Stopped, Phase = stop.Step, Reason = reason, Hint = fix },
                UpdatedAt = now,
            },
            pending,
            durable: true,
            withEvents: true);
        LogStopped(context.Deployment.Id, stop.Step, error.Message);
        return deployment;
    }

    private static string? HintOf(Exception error)
    {
        for (var e = error; e is not null; e = e.InnerException)
        {
            if (e is TealException { Hint: { } hint })
            {
                return hint;
            }
        }

        return null;
    }

    private async Task<Deployment> FinishAsync(SwitchoverContext context, Run run, List<JournalEntry> pending)
    {
        // After a recovery the endpoints came up holding; resume-endpoints may have run before the crash.
        await RetryAsync(context, "resume-endpoints", () => ResumeHeldAsync(context), CancellationToken.None);
        pending.Add(run.Entry(null, JournalAction.Closed));
        // The outcome's event is written with the outcome (one commit): whoever sees the
        // deployment completed finds the event that says so, with the pause it cost.
        var pauseMs = run.State(context.Current.Switchover).WritePauseMilliseconds;
        var pause = pauseMs is { } ms ? $"; clients were paused for {ms:0} ms" : string.Empty;
        if (context.IsSwitchback)
        {
            context.Record(
                EventKinds.Switchback,
                $"switchback completed: '{context.Names?.Blue ?? context.BlueName}' is the old blue again, replicating to '{context.Names?.BlueNewName}'{pause}",
                run.TimingData());
        }
        else
        {
            context.Record(
                EventKinds.SwitchoverCompleted,
                $"switchover completed: '{context.Names?.Blue ?? context.BlueName}' is now green{pause}",
                run.TimingData());
        }

        var now = context.Time.GetUtcNow();
        var deployment = await UpdateAsync(
            context,
            d => Outcome(context, d) with
            {
                StatusReason = null,
                Switchover = run.State(d.Switchover) with
                {
                    Outcome = SwitchoverOutcome.Completed,
                    Reason = null,
                    Hint = null,
                    FinishedAt = now,
                    BlueFinalPosition = context.BlueFinalPosition,
                    GreenPosition = context.GreenPosition,
                },
                UpdatedAt = now,
            },
            pending,
            durable: true,
            withEvents: true);
        var switchover = deployment.Switchover!;
        LogCompleted(context.Deployment.Id, switchover.WritePauseMilliseconds ?? 0);
        return deployment;
    }

    /// <summary>
    /// Where a completed cutover leaves the deployment. A switchover with reverse replication:
    /// completed, replicating back to the old blue (which a switchback can reopen). Without:
    /// completed, replication stopped. A switchback: available again, replicating blue → green,
    /// so it can be switched over again.
    /// </summary>
    private static Deployment Outcome(SwitchoverContext context, Deployment d)
    {
        var reverse = context.ReverseStartPosition is not null;
        if (context.IsSwitchback)
        {
            return d with
            {
                Status = reverse ? DeploymentStatus.Available : DeploymentStatus.SwitchoverCompleted,
                Reversed = false,
                Replication = new ReplicationStatus(reverse ? ReplicationState.Replicating : ReplicationState.Stopped) { Reason = reverse ? null : "replication was dropped at switchback" },
            };
        }

        return d with
        {
            Status = DeploymentStatus.SwitchoverCompleted,
            Reversed = reverse,
            Replication = reverse
                ? new ReplicationStatus(ReplicationState.ReverseReplicating) { Reason = "green's writes replicate to the old blue; `teal switchback` returns to it, `teal finish` ends it" }
                : d.Replication with { State = ReplicationState.Stopped, Reason = "forward replication was dropped at switchover", LagBytes = null, LagSeconds = null, RetainedBytes = null },
        };
    }

    private static Task ResumeHeldAsync(SwitchoverContext context) =>
        Task.WhenAll(context.Endpoints.Where(e => e.Paused).Select(e => e.ResumeAsync(CancellationToken.None)));

    /// <summary>
    /// Journal entries plus the deployment's current phase and timings, in one transaction;
    /// flushed to disk when <paramref name="durable"/> (see <see cref="ISwitchoverStep.NothingToUndo"/> for when it need not be).
    /// </summary>
    private async Task CommitAsync(SwitchoverContext context, Run run, List<JournalEntry> entries, string phase, bool durable, CancellationToken cancellationToken)
    {
        var change = new DeploymentChange(context.Deployment.Id, d => d with { Switchover = run.State(d.Switchover) with { Phase = phase } });
        await state.ApplyAsync(new StateChange { Journal = [.. entries], Deployments = [change], Durable = durable }, cancellationToken);
        context.Current = change.Result!; // Set by the store, or ApplyAsync threw.
    }

    /// <summary>
    /// Writes the deployment and journal entries in one transaction; <paramref name="withEvents"/>:
    /// with the events recorded so far (kept for after the pause until the outcome is written).
    /// </summary>
    private async Task<Deployment> UpdateAsync(SwitchoverContext context, Func<Deployment, Deployment> update, List<JournalEntry> entries, bool durable, bool withEvents = false)
    {
        var change = new DeploymentChange(context.Deployment.Id, update);
        var events = withEvents ? context.Events.ToArray() : [];
        await state.ApplyAsync(
            new StateChange { Journal = [.. entries], Deployments = [change], Events = [.. events.Select(e => ToNewEvent(context, e))], Durable = durable },
            CancellationToken.None);
        // Only once they are written: a failed write leaves them queued with the outcome unwritten.
        for (var i = 0; i < events.Length; i++)
        {
            context.Events.TryDequeue(out _);
        }

        context.Current = change.Result!; // Set by the store, or ApplyAsync threw.
        return context.Current;
    }

    private const string SwitchoverIdKey = "switchoverId";

    private static NewEvent ToNewEvent(SwitchoverContext context, PendingEvent e) =>
        new(
            context.Deployment.Id,
            e.Kind,
            e.Message,
            new Dictionary<string, string>(e.Data)
            {
                ["at"] = e.At.ToString("O", CultureInfo.InvariantCulture),
                [SwitchoverIdKey] = context.SwitchoverId,
            });

    private async Task TryAppendEventAsync(SwitchoverContext context, string kind, string message, Dictionary<string, string> data)
    {
        data[SwitchoverIdKey] = context.SwitchoverId;
        try
        {
            await state.AppendEventAsync(context.Deployment.Id, kind, message, data, CancellationToken.None);
        }
        catch (Exception ex) when (ex is TealException or IOException or InvalidOperationException)
        {
            // The retry itself matters more than its event; the log has it.
            LogEventLost(ex, context.Deployment.Id, kind);
        }
    }

    private List<ISwitchoverStep> Decorate(IReadOnlyList<ISwitchoverStep> plan) =>
        plan.Select(step => decorators.Aggregate(step, (s, d) => d.Decorate(s))).ToList();

    /// <summary>A step after the point of no return failed with a permanent error: the switchover stops there.</summary>
    private sealed class SwitchoverStop(string step, Exception cause) : Exception($"{step}: {cause.Message}", cause)
    {
        public string Step => step;
    }

    /// <summary>What one run (or recovery) of a plan has done so far.</summary>
    private sealed class Run(SwitchoverContext context, IReadOnlyList<ISwitchoverStep> steps)
    {
        // Timings a run before this one (interrupted by a crash or stopped) had committed.
        private readonly IReadOnlyList<PhaseTiming> _earlier = context.Current.Switchover?.Phases ?? [];
        private long? _pauseStarted;
        private long? _resumed;
        private DateTimeOffset? _pausedAt;
        private DateTimeOffset? _resumedAt;

        public IReadOnlyList<ISwitchoverStep> Steps => steps;

        // Work steps journaled ahead began (ISwitchoverStep.WorksAhead), until each step runs.
        private readonly Dictionary<ISwitchoverStep, Task> _ahead = [];

        public List<int> Started { get; } = [];

        /// <summary>Steps whose start an earlier commit journaled (<see cref="ISwitchoverStep.JournaledAhead"/>).</summary>
        public HashSet<int> JournaledAhead { get; } = [];

        public List<PhaseTiming> Timings { get; } = [];

        public bool PastPointOfNoReturn { get; set; }

        /// <summary>
        /// Starts the work ahead of the steps just journaled ahead that have some; each counts as
        /// started from now, so a rollback undoes it.
        /// </summary>
        public void WorkAhead(IEnumerable<int> ahead, CancellationToken cancellationToken)
        {
            foreach (var i in ahead.Where(i => steps[i].WorksAhead))
            {
                Started.Add(i);
                var work = steps[i].WorkAheadAsync(context, cancellationToken);
                lock (_ahead)
                {
                    _ahead[steps[i]] = work;
                }
            }
        }

        /// <summary>The work <paramref name="step"/> began ahead (its failure is the step's), or nothing.</summary>
        public Task AheadOf(ISwitchoverStep step)
        {
            lock (_ahead)
            {
                return _ahead.Remove(step, out var work) ? work : Task.CompletedTask;
            }
        }

        /// <summary>Waits for work begun ahead that no step awaited (a step before it failed); its errors are the undo's to meet.</summary>
        public async Task SettleAheadAsync()
        {
            List<Task> left;
            lock (_ahead)
            {
                left = [.. _ahead.Values];
                _ahead.Clear();
            }

            foreach (var work in left)
            {
                try
                {
                    await work;
                }
                catch (Exception)
                {
                    // The step never ran: its undo, next, puts back whatever part of the work was done.
                }
            }
        }

        public JournalEntry Entry(ISwitchoverStep? step, JournalAction action) =>
            new(context.Deployment.Id, context.SwitchoverId, step?.Name ?? "switchover", action, context.Time.GetUtcNow())
            {
                Data = context.JournalData(),
            };

        public async Task TimeAsync(ISwitchoverStep step, Func<Task> execute)
        {
            var start = context.Time.GetTimestamp();
            if (step.StartsWritePause)
            {
                _pauseStarted = start;
                _pausedAt = context.Time.GetUtcNow();
            }

            await execute();
            var end = context.Time.GetTimestamp();
            if (step.EndsWritePause)
            {
                _resumed = end;
                _resumedAt = context.Time.GetUtcNow();
            }

            lock (Timings)
            {
                // Steps of one group run at once: they are recorded in the order they finish.
                Timings.Add(new PhaseTiming(step.Name, "done", context.Time.GetElapsedTime(start, end).TotalMilliseconds));
            }
        }

        public SwitchoverState State(SwitchoverState? current)
        {
            List<PhaseTiming> timings;
            lock (Timings)
            {
                timings = [.. _earlier, .. Timings];
            }

            var pausedAt = _pausedAt ?? current?.PausedAt;
            return (current ?? new SwitchoverState(context.SwitchoverId, context.Time.GetUtcNow(), (int)context.Options.Timeout.TotalSeconds)) with
            {
                Phases = timings,
                WritePauseMilliseconds = (_pauseStarted, _resumed, pausedAt, _resumedAt) switch
                {
                    ({ } p, { } r, _, _) => context.Time.GetElapsedTime(p, r).TotalMilliseconds,
                    // Paused before a crash, resumed by the recovery: only the wall clock spans both.
                    (null, _, { } at, { } resumedAt) => (resumedAt - at).TotalMilliseconds,
                    _ => current?.WritePauseMilliseconds,
                },
                PausedAt = pausedAt,
                ResumedAt = _resumedAt ?? current?.ResumedAt,
            };
        }

        public Dictionary<string, string> TimingData()
        {
            lock (Timings)
            {
                return _earlier.Concat(Timings).GroupBy(t => t.Step).ToDictionary(g => "ms." + g.Key, g => g.Last().Milliseconds.ToString("0.0", CultureInfo.InvariantCulture));
            }
        }
    }

    [LoggerMessage(EventId = 1501, Level = LogLevel.Warning, Message = "Switchover of {Id}: step {Step} failed; rolling back")]
    private partial void LogStepFailed(Exception exception, DeploymentId id, string step);

    [LoggerMessage(EventId = 1502, Level = LogLevel.Error, Message = "Switchover of {Id}: step {Step} failed after the point of no return (attempt {Attempt}); the error is transient, retrying")]
    private partial void LogForwardRetry(Exception exception, DeploymentId id, string step, int attempt);

    [LoggerMessage(EventId = 1503, Level = LogLevel.Error, Message = "Switchover of {Id}: undoing {Step} failed (attempt {Attempt}); retrying")]
    private partial void LogUndoFailed(Exception exception, DeploymentId id, string step, int attempt);

    [LoggerMessage(EventId = 1504, Level = LogLevel.Warning, Message = "Switchover of {Id} rolled back: {Reason}")]
    private partial void LogRolledBack(DeploymentId id, string reason);

    [LoggerMessage(EventId = 1505, Level = LogLevel.Information, Message = "Switchover of {Id} completed; write pause {PauseMs:0} ms")]
    private partial void LogCompleted(DeploymentId id, double pauseMs);

    [LoggerMessage(EventId = 1506, Level = LogLevel.Warning, Message = "Switchover of {Id} was interrupted during {Step}; {What}")]
    private partial void LogRecovering(DeploymentId id, string step, string what);

    [LoggerMessage(EventId = 1507, Level = LogLevel.Error, Message = "Switchover of {Id}: step {Step} failed after the point of no return with a permanent error; stopping")]
    private partial void LogForwardStopped(Exception exception, DeploymentId id, string step);

    [LoggerMessage(EventId = 1508, Level = LogLevel.Error, Message = "Switchover of {Id} stopped at {Step}: {Error}; waiting for --resume")]
    private partial void LogStopped(DeploymentId id, string step, string error);

    [LoggerMessage(EventId = 1509, Level = LogLevel.Error, Message = "Switchover of {Id}: Teal stops while undoing {Step} still fails; the next start goes on with the rollback")]
    private partial void LogRollbackInterrupted(DeploymentId id, string step);

    [LoggerMessage(EventId = 1510, Level = LogLevel.Warning, Message = "Switchover of {Id}: event {Kind} could not be recorded")]
    private partial void LogEventLost(Exception exception, DeploymentId id, string kind);
}
