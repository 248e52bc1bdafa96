using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.Core.Guardrails;
using Teal.MySql.Engines;

namespace Teal.MySql.Replication;

/// <summary>
/// Binlog replication by GTID from blue to green for one deployment, and the primitives a
/// switchover is built from. Each concern lives in its own class, as in the PostgreSQL engine;
/// this one wires them to one set of pooled connections and keeps the heartbeat history, the
/// copy's progress and the DDL seen in memory.
/// </summary>
public sealed class MySqlReplicationLink : IReplicationLink, IAsyncDisposable
{
    private readonly LinkSessions _sessions;
    private readonly PrerequisiteChecks _prerequisites;
    private readonly Fencing _fencing;
    private readonly SnapshotCopy _copy;
    private readonly ReplicationSetup _setup;
    private readonly StatusReader _status;
    private readonly Positions _positions;
    private readonly Verifier _verifier;
    private readonly SwitchoverChecks _switchover;

    public MySqlReplicationLink(LinkSpec spec, MariaDbEngineCatalog catalog, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(spec);
        _sessions = new LinkSessions(spec);
        _prerequisites = new PrerequisiteChecks(_sessions);
        _fencing = new Fencing(_sessions);
        _copy = new SnapshotCopy(_sessions);
        _setup = new ReplicationSetup(_sessions, _fencing, _copy, new DumpTool(catalog));
        _status = new StatusReader(_sessions, _setup, _copy, time);
        _positions = new Positions(_sessions);
        _verifier = new Verifier(_sessions, _setup);
        _switchover = new SwitchoverChecks(_sessions, _status);
    }

    public async Task<CheckReport> CheckPrerequisitesAsync(CancellationToken cancellationToken)
    {
        var report = await _prerequisites.RunAsync(cancellationToken);
        // An external green skips CheckBeforeGreenAsync: refuse CDC slots here too.
        return _sessions.Spec.CdcSlots.Count == 0
            ? report
            : new CheckReport([.. report.Results, CheckResult.Fail("cdc-slots", $"MariaDB has no logical replication slots: {string.Join(", ", _sessions.Spec.CdcSlots)} cannot be carried to green", "create the deployment without --cdc-slot")]);
    }

    public Task CopySchemaAsync(CancellationToken cancellationToken) => _setup.CopySchemaAsync(cancellationToken);

    public Task StartReplicationAsync(CancellationToken cancellationToken) => _setup.StartAsync(cancellationToken);

    public Task<ReplicationSnapshot> ReadStatusAsync(CancellationToken cancellationToken) => _status.ReadAsync(cancellationToken);

    public Task WriteHeartbeatAsync(CancellationToken cancellationToken) => _status.WriteHeartbeatAsync(cancellationToken);

    /// <summary>Nothing to acknowledge: DDL on blue replicates through the binlog and is only recorded as an event.</summary>
    public Task AcknowledgeDdlAsync(long upToId, CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Tables created on blue reach green through the binlog (CREATE TABLE and its rows): none is ever skipped.</summary>
    public Task<IReadOnlyList<string>> AddMissingTablesAsync(CancellationToken cancellationToken) => Task.FromResult<IReadOnlyList<string>>([]);

    /// <summary>Nothing to apply: the binlog carries DDL to green by itself (recorded as events, never pending).</summary>
    public Task<IReadOnlyList<DdlApplied>> ApplyDdlAsync(CancellationToken cancellationToken) => Task.FromResult<IReadOnlyList<DdlApplied>>([]);

    /// <summary>MariaDB has no materialized views.</summary>
    public Task<IReadOnlyList<string>> RefreshMaterializedViewsAsync(CancellationToken cancellationToken) => Task.FromResult<IReadOnlyList<string>>([]);

    /// <summary>
    /// Accounts are copied with their password hashes by the schema copy (when roles are copied)
    /// and replicate through the binlog afterwards (CREATE USER, SET PASSWORD), so nothing is
    /// left to sync; none is reported.
    /// </summary>
    public Task<IReadOnlyList<string>> SyncLoginsAsync(CancellationToken cancellationToken) => Task.FromResult<IReadOnlyList<string>>([]);

    public Task<VerifyReport> VerifyAsync(IProgress<TableVerification>? progress, CancellationToken cancellationToken) => _verifier.VerifyAsync(progress, cancellationToken);

    public Task RemoveAsync(CancellationToken cancellationToken) => _setup.RemoveAsync(cancellationToken);

    /// <summary>
    /// Before the pause, while clients still write: the sessions the switchover needs are opened,
    /// and green is brought close to blue (<see cref="Positions.CatchUpBeforePauseAsync"/>), so
    /// the catch-up inside the write pause has little left to apply.
    /// </summary>
    public async Task WarmUpAsync(CancellationToken cancellationToken)
    {
        await _sessions.WarmUpAsync(cancellationToken);
        await _positions.CatchUpBeforePauseAsync(cancellationToken);
    }

    public Task<CheckReport> CheckSwitchoverAsync(SwitchoverGuardrailOptions options, CancellationToken cancellationToken) => _switchover.RunAsync(options, cancellationToken);

    public Task FenceAsync(Side side, CancellationToken cancellationToken) => _fencing.FenceAsync(side, cancellationToken);

    /// <summary>Blue: the fence lifts. Green: it opens — replication stops and is reset, then the fence lifts.</summary>
    public Task UnfenceAsync(Side side, CancellationToken cancellationToken) =>
        side == Side.Green ? _setup.OpenGreenAsync(cancellationToken) : _fencing.UnfenceAsync(side, cancellationToken);

    public Task<DrainResult> DrainAsync(Side side, TimeSpan budget, CancellationToken cancellationToken) => _fencing.DrainAsync(side, budget, cancellationToken);

    /// <summary>See <see cref="IReplicationLink.OpenTransactionsQuery"/>.</summary>
    public const string OpenTransactions = "SELECT trx_mysql_thread_id, trx_started, trx_state, LEFT(trx_query, 80) FROM information_schema.innodb_trx ORDER BY trx_started";

    public string OpenTransactionsQuery => OpenTransactions;

    public Task<ReplicationPosition> MarkFinalPositionAsync(CancellationToken cancellationToken) => _positions.MarkAsync(cancellationToken);

    public Task WaitForPositionAsync(ReplicationPosition position, CancellationToken cancellationToken) => _positions.WaitAsync(position, cancellationToken);

    /// <summary>MariaDB: every AUTO_INCREMENT counter on green checked against blue's largest value, and raised if not above it.</summary>
    public Task<IReadOnlyList<SequenceSync>> SyncSequencesAsync(CancellationToken cancellationToken) => _positions.CheckAutoIncrementAsync(cancellationToken);

    public Task<ReplicationPosition> ReadPositionAsync(Side side, CancellationToken cancellationToken) => _positions.ReadAsync(side, cancellationToken);

    public Task StopReplicationAsync(CancellationToken cancellationToken) => _setup.StopAsync(cancellationToken);

    /// <summary>Reverse replication is PostgreSQL's for now: a MariaDB switchover ends with the old blue fenced and no way back.</summary>
    public Task<ReplicationPosition?> PrepareReverseReplicationAsync(CancellationToken cancellationToken) => Task.FromResult<ReplicationPosition?>(null);

    public Task DropReverseReplicationAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartReverseReplicationAsync(ReplicationPosition from, CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>CDC slots are PostgreSQL's logical slots; create refuses them for MariaDB (MariaDbEngine.CheckBeforeGreenAsync), so none is named here.</summary>
    public Task WaitForCdcConsumersAsync(ReplicationPosition position, CancellationToken cancellationToken) => Task.CompletedTask;

    public Task<IReadOnlyList<CdcSlotCreated>> CreateCdcSlotsAsync(ReplicationPosition greenCaughtUp, CancellationToken cancellationToken) =>
        throw new Teal.Core.Errors.TealException("cdc.not-supported", "MariaDB has no logical replication slots for CDC consumers", "binlog consumers re-anchor on green with the coordinates of the switchover's positions event; create the deployment without --cdc-slot");

    /// <summary>Without reverse replication a finish only removes what delete would, leaving green (the old blue) fenced.</summary>
    public Task FinishAsync(CancellationToken cancellationToken) =>
        throw new Teal.Core.Errors.TealException("finish.not-supported", "MariaDB deployments have no reverse replication to finish", "delete the deployment with `teal delete` when done");

    public async ValueTask DisposeAsync()
    {
        await _setup.DisposeAsync();
        await _sessions.DisposeAsync();
    }
}
