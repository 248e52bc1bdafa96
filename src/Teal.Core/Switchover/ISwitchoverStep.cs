namespace Teal.Core.Switchover;

/// <summary>
/// One action of the switchover runbook (PRODUCT.md §6). The executor journals a step before
/// it acts; a step that fails, or any step before the point of no return when a later one
/// fails or the timeout passes, is undone in reverse order. Execute and undo are idempotent:
/// after a crash either may run again on a step that already (partly) ran.
/// </summary>
public interface ISwitchoverStep
{
    /// <summary>Stable name, as in the journal, the API and the bench output (<c>fence-blue</c>).</summary>
    string Name { get; }

    /// <summary>What the step does, for <c>--dry-run</c> and the docs.</summary>
    string Description { get; }

    /// <summary>
    /// Once this step has started, Teal only rolls forward: the endpoints may already send
    /// clients to green, so blue must never be reopened.
    /// </summary>
    bool IsPointOfNoReturn => false;

    /// <summary>Whether undoing this step makes blue writable again (the rollback bar is measured to it).</summary>
    bool UndoReopensBlue => false;

    /// <summary>
    /// The step changes nothing a rollback must revert (it waits, reads, or sets green's own
    /// state). Its journal entry is still written before it acts and survives a crash of Teal,
    /// but without a disk flush: after a power failure recovery loses nothing by not knowing
    /// that such a step started. Steps after the point of no return need no flush either (the
    /// flip's entry is flushed, and recovery then reruns every later step not recorded done).
    /// </summary>
    bool NothingToUndo => false;

    /// <summary>
    /// Undoing the step where it never ran is harmless (the fence: its undo is idempotent), so
    /// the executor journals its start ahead, in the flushed commit of the nearest step before it
    /// with something to undo, when only steps with nothing to undo lie between: its own journal
    /// commit then needs no disk flush inside the write pause. After a crash recovery finds it
    /// started and undoes it, whether it had run or not.
    /// </summary>
    bool JournaledAhead => false;

    /// <summary>
    /// A step journaled ahead (<see cref="JournaledAhead"/>) starts <see cref="WorkAheadAsync"/>
    /// as soon as that commit landed, while the steps before it still run; its own
    /// <see cref="ExecuteAsync"/> waits for that work, then does the rest. The work ahead must
    /// change nothing a client can notice before the step itself runs (the fence writes blue's
    /// pg_hba.conf, which the postmaster reads only at the fence's reload). Once it has begun, a
    /// rollback undoes the step as if it had run; after a crash recovery undoes it anyway.
    /// </summary>
    bool WorksAhead => false;

    /// <summary>The part of the step done ahead (<see cref="WorksAhead"/>).</summary>
    Task WorkAheadAsync(SwitchoverContext context, CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// The step needs nothing the step before it does, so the executor runs the two at once: one
    /// journal commit records both as started (flushed if either needs it), and the step after
    /// waits for both. Only for steps inside the write pause, where every millisecond is clients
    /// waiting; a step never runs alongside one on the other side of the point of no return.
    /// </summary>
    bool RunsWithPrevious => false;

    /// <summary>Clients are held from the moment this step starts: the write pause is timed from it.</summary>
    bool StartsWritePause => false;

    /// <summary>Clients write again once this step is done: the write pause is timed to it.</summary>
    bool EndsWritePause => false;

    /// <summary>
    /// Decides what the step will do and records it in the context's typed fields before the
    /// journal entry is written (so recovery finishes the same action, e.g. the same names).
    /// </summary>
    Task PrepareAsync(SwitchoverContext context, CancellationToken cancellationToken) => Task.CompletedTask;

    Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken);

    /// <summary>Reverts the step (no-op for steps with nothing to revert).</summary>
    Task UndoAsync(SwitchoverContext context, CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Records the step's event from what it left in the context. The executor calls it once the
    /// step succeeded, and again when it finishes a switchover after a crash for a step that had
    /// completed before (events are persisted after the write pause, so that one was lost).
    /// </summary>
    void RecordOutcome(SwitchoverContext context)
    {
    }
}

/// <summary>
/// Wraps steps of a plan. Production registers none; tests use one to inject faults (crash
/// Teal at a phase, fail a step) without switches in product code.
/// </summary>
public interface ISwitchoverStepDecorator
{
    ISwitchoverStep Decorate(ISwitchoverStep inner);
}
