using Teal.Core.Deployments;
using Teal.Core.Guardrails;

namespace Teal.Core.Engines;

/// <summary>
/// Replication between a deployment's blue and green, and the primitives the switchover plan is
/// built from. Every operation that changes something is idempotent (safe to repeat after a
/// crash), and every one that a switchover may need to undo has its inverse here.
/// </summary>
public interface IReplicationLink
{
    // ---- create -------------------------------------------------------------------------------

    /// <summary>All prerequisites (PRODUCT.md §4.1), every one reported; changes nothing.</summary>
    Task<CheckReport> CheckPrerequisitesAsync(CancellationToken cancellationToken);

    /// <summary>Creates the database on green and copies blue's schema into it.</summary>
    Task CopySchemaAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Installs Teal's objects on blue (heartbeat table, DDL event trigger), creates the
    /// publication on blue and the subscription on green, and fences green so only Teal and the
    /// replication apply worker write there until switchover.
    /// </summary>
    Task StartReplicationAsync(CancellationToken cancellationToken);

    // ---- monitor ------------------------------------------------------------------------------

    /// <summary>Lag, copy progress, worker health, DDL seen and tables skipped, read now.</summary>
    Task<ReplicationSnapshot> ReadStatusAsync(CancellationToken cancellationToken);

    /// <summary>Writes the heartbeat row on blue (the monitor calls this every second).</summary>
    Task WriteHeartbeatAsync(CancellationToken cancellationToken);

    /// <summary>Marks recorded DDL up to <paramref name="upToId"/> as applied on green by the operator.</summary>
    Task AcknowledgeDdlAsync(long upToId, CancellationToken cancellationToken);

    /// <summary>
    /// Creates tables that exist on blue but not in the subscription on green and refreshes the
    /// subscription so they are copied. Returns the tables added.
    /// </summary>
    Task<IReadOnlyList<string>> AddMissingTablesAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Runs the DDL recorded on blue and not yet acknowledged on green, in blue's order, through
    /// Teal's own session (it writes through green's fence), acknowledging each statement that
    /// took effect; stops at the first that fails or cannot be replayed. Returns each outcome.
    /// </summary>
    Task<IReadOnlyList<DdlApplied>> ApplyDdlAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Refreshes on green every materialized view that is populated on blue (logical
    /// replication carries no view contents). Returns the views refreshed.
    /// </summary>
    Task<IReadOnlyList<string>> RefreshMaterializedViewsAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Readies green for production once the initial copy is done, before the deployment is
    /// AVAILABLE: PostgreSQL runs <c>VACUUM (ANALYZE)</c> on every replicated table (planner
    /// statistics, visibility map and hint bits, so the first queries and the first verify do not
    /// pay for them), reporting each table as it finishes. Returns the tables processed. An engine
    /// whose green needs nothing of the kind keeps this default.
    /// </summary>
    Task<IReadOnlyList<string>> PrepareGreenAsync(IProgress<TablePrepared>? progress, CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<string>>([]);

    /// <summary>
    /// How the readers Teal made stream from one side: one entry per slot in
    /// <paramref name="slots"/>, with a null state when no reader is connected to it. An engine
    /// whose link makes no readers reports none.
    /// </summary>
    Task<IReadOnlyList<ReaderReplication>> ReadReadersAsync(Side side, IReadOnlyList<string> slots, CancellationToken cancellationToken) =>
        Task.FromResult<IReadOnlyList<ReaderReplication>>([]);

    // ---- verify and delete --------------------------------------------------------------------

    /// <summary>Compares blue and green table by table at one replication position.</summary>
    Task<VerifyReport> VerifyAsync(IProgress<TableVerification>? progress, CancellationToken cancellationToken);

    /// <summary>Removes every object Teal created for this deployment on both sides.</summary>
    Task RemoveAsync(CancellationToken cancellationToken);

    // ---- switchover primitives ----------------------------------------------------------------

    /// <summary>
    /// Opens, before the write pause, the sessions the switchover primitives will use on both
    /// sides, so that no connection is set up (process start, authentication) while clients wait.
    /// Changes nothing.
    /// </summary>
    Task WarmUpAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Where Teal's own OS user may log in to green as any role while green is still fenced: a
    /// Unix socket on this machine (PostgreSQL: a server Teal provisioned, whose fenced pg_hba.conf
    /// keeps a peer rule for that OS user alone). Endpoints on this machine log the
    /// sessions they will move in there before the pause. Null when green admits no such login.
    /// </summary>
    Task<string?> FencedLoginSocketAsync(CancellationToken cancellationToken) => Task.FromResult<string?>(null);

    /// <summary>Engine-side guardrails (replication health, lag, writes on green, external replication, long writes on blue).</summary>
    Task<CheckReport> CheckSwitchoverAsync(SwitchoverGuardrailOptions options, CancellationToken cancellationToken);

    /// <summary>
    /// The part of <see cref="FenceAsync"/> no client can notice before the fence itself (files
    /// written but not yet read by the server), done ahead of it; the fence's undo puts it back.
    /// Engines with nothing to do ahead do nothing, and the fence does it all.
    /// </summary>
    Task PrepareFenceAsync(Side side, CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Makes one side refuse writes from everyone but Teal (and replication).</summary>
    Task FenceAsync(Side side, CancellationToken cancellationToken);

    /// <summary>Undoes <see cref="FenceAsync"/>.</summary>
    Task UnfenceAsync(Side side, CancellationToken cancellationToken);

    /// <summary>
    /// Undoes green's fence at a cutover, calling <paramref name="loginsBack"/> as soon as
    /// clients could log in to green again and before the rest of the unfence, so that the
    /// endpoints log in there what they move while Teal finishes opening it (PostgreSQL: LOGIN
    /// comes back first, the read-only default is reset and reloaded after the callback; a
    /// session that logged in before the reload applies it before its first statement). Not
    /// called when green stays fenced by another deployment. Links whose green opens in one move
    /// keep this default: the callback comes once green is open.
    /// </summary>
    async Task OpenGreenAsync(Func<CancellationToken, Task> loginsBack, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(loginsBack);
        await UnfenceAsync(Side.Green, cancellationToken);
        await loginsBack(cancellationToken);
    }

    /// <summary>
    /// Waits up to <paramref name="budget"/> for transactions that were open when the side was
    /// fenced to finish, then terminates the sessions still holding one.
    /// </summary>
    Task<DrainResult> DrainAsync(Side side, TimeSpan budget, CancellationToken cancellationToken);

    /// <summary>
    /// A query that lists a side's open transactions, oldest first, for the hint when one holds
    /// up the switchover (PostgreSQL: <c>pg_stat_activity</c>; MariaDB: <c>information_schema.innodb_trx</c>).
    /// </summary>
    string OpenTransactionsQuery { get; }

    /// <summary>Writes a marker on (fenced) blue as Teal and returns its position.</summary>
    Task<ReplicationPosition> MarkFinalPositionAsync(CancellationToken cancellationToken);

    /// <summary>Waits until green has applied everything up to <paramref name="position"/>.</summary>
    Task WaitForPositionAsync(ReplicationPosition position, CancellationToken cancellationToken);

    /// <summary>Sets every sequence on green to blue's value (PostgreSQL) / checks AUTO_INCREMENT.</summary>
    Task<IReadOnlyList<SequenceSync>> SyncSequencesAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Gives every role that logs in to blue the same password on green (blue's stored
    /// verifier), so clients log in to green as they did to blue. Returns the roles that will
    /// not (missing on green, or green's own user whose password Teal keeps).
    /// </summary>
    Task<IReadOnlyList<string>> SyncLoginsAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Current write position of one side (PostgreSQL: the WAL insert LSN, past every commit
    /// already visible, even one not yet written out, as the apply worker's asynchronous commits are).
    /// </summary>
    Task<ReplicationPosition> ReadPositionAsync(Side side, CancellationToken cancellationToken);

    /// <summary>Stops forward replication for good (drops the subscription and blue's slot).</summary>
    Task StopReplicationAsync(CancellationToken cancellationToken);

    // ---- CDC slots (LinkSpec.CdcSlots) ---------------------------------------------------------

    /// <summary>
    /// Waits until the consumer of every CDC slot on blue has confirmed <paramref name="position"/>
    /// (blue's final position), so none is cut off from blue's last changes.
    /// </summary>
    Task WaitForCdcConsumersAsync(ReplicationPosition position, CancellationToken cancellationToken);

    /// <summary>
    /// Creates on green, while it is fenced and has applied blue's final position, a slot of each
    /// CDC slot's name and plugin (and what its consumers need there, such as blue's publications).
    /// A slot already on green that existed before <paramref name="greenCaughtUp"/> (green's
    /// position once it had applied blue's final one) is left from an earlier cutover and decoded
    /// replicated writes: it is replaced. One made after it (a recovery repeating the step) is
    /// kept with its start. Engines without logical slots refuse when slots are named.
    /// </summary>
    Task<IReadOnlyList<CdcSlotCreated>> CreateCdcSlotsAsync(ReplicationPosition greenCaughtUp, CancellationToken cancellationToken);

    // ---- reverse replication (switchback) -----------------------------------------------------

    /// <summary>
    /// Creates on green (fenced; before the write pause, while it still applies blue's writes)
    /// the publication and the slot that replication back to blue will read, so every write
    /// green takes once opened is kept for blue. Idempotent (an existing slot is kept, with its
    /// position). Returns the slot's start position; null when the engine has no reverse replication.
    /// </summary>
    Task<ReplicationPosition?> PrepareReverseReplicationAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Undoes <see cref="PrepareReverseReplicationAsync"/> when the switchover rolls back: the
    /// slot and the publication leave green (a slot left there would hold its WAL). Idempotent.
    /// </summary>
    Task DropReverseReplicationAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Subscribes blue (fenced, and staying so for clients) to green from the slot
    /// <see cref="PrepareReverseReplicationAsync"/> made, without copying data, applying what
    /// green committed from <paramref name="from"/> on (green's position once it had applied
    /// blue's final one: before it lies what blue already has); forward replication must be
    /// stopped first. Idempotent.
    /// </summary>
    Task StartReverseReplicationAsync(ReplicationPosition from, CancellationToken cancellationToken);

    /// <summary>
    /// Removes replication and every object Teal created for the deployment on both sides, but
    /// leaves green's fence (<c>teal finish</c> on a reversed link: the old blue stays fenced
    /// until <c>teal instance unfence</c>).
    /// </summary>
    Task FinishAsync(CancellationToken cancellationToken);
}
