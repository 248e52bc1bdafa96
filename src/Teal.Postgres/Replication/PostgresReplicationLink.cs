using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.Core.Guardrails;
using Teal.Postgres.Engines;

namespace Teal.Postgres.Replication;

/// <summary>
/// Logical replication (publication on blue, subscription on green) for one deployment, and
/// the primitives a switchover is built from. Each concern lives in its own class; this one
/// wires them to one set of pooled connections and keeps the heartbeat history in memory.
/// </summary>
public sealed class PostgresReplicationLink : IReplicationLink, IAsyncDisposable
{
    private readonly LinkSessions _sessions;
    private readonly PrerequisiteChecks _prerequisites;
    private readonly SchemaCopy _schema;
    private readonly Fencing _fencing;
    private readonly ReplicationSetup _setup;
    private readonly StatusReader _status;
    private readonly Positions _positions;
    private readonly Verifier _verifier;
    private readonly SwitchoverChecks _switchover;
    private readonly DdlLog _ddl;
    private readonly MaterializedViews _views;
    private readonly Logins _logins;
    private readonly Reachability _reach;
    private readonly GreenStatistics _statistics;

    /// <summary>Ends background work of the link (the analyze after a later table copy) when it is disposed.</summary>
    private readonly CancellationTokenSource _stopping = new();
    private readonly ReverseReplication _reverse;
    private readonly CdcSlots _cdc;

    public PostgresReplicationLink(LinkSpec spec, PostgresEngineCatalog catalog, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(spec);
        _sessions = new LinkSessions(spec);
        _prerequisites = new PrerequisiteChecks(_sessions, catalog);
        _schema = new SchemaCopy(_sessions, catalog);
        _fencing = new Fencing(_sessions, time);
        _ddl = new DdlLog(_sessions);
        var drift = new SchemaDrift(_sessions, _schema);
        _setup = new ReplicationSetup(_sessions, _fencing, _schema, drift, _ddl);
        _status = new StatusReader(_sessions, _setup, drift, _ddl, time);
        _views = new MaterializedViews(_sessions);
        _positions = new Positions(_sessions, time);
        _verifier = new Verifier(_sessions, _positions);
        _logins = new Logins(_sessions);
        _statistics = new GreenStatistics(_sessions);
        _cdc = new CdcSlots(_sessions, time);
        _switchover = new SwitchoverChecks(_sessions, _status, _logins, _statistics, _cdc);
        _reach = new Reachability(_sessions);
        _reverse = new ReverseReplication(_sessions, _fencing, _setup);
    }

    public Task<CheckReport> CheckPrerequisitesAsync(CancellationToken cancellationToken) => _prerequisites.RunAsync(cancellationToken);

    public Task CopySchemaAsync(CancellationToken cancellationToken) => _schema.CopyAsync(cancellationToken);

    public Task StartReplicationAsync(CancellationToken cancellationToken) => _setup.StartAsync(cancellationToken);

    public async Task<ReplicationSnapshot> ReadStatusAsync(CancellationToken cancellationToken)
    {
        var snapshot = await _status.ReadAsync(cancellationToken);
        return _sessions.Spec.CdcSlots.Count == 0 ? snapshot : snapshot with { CdcSlots = await _cdc.ReadAsync(cancellationToken) };
    }

    public Task WriteHeartbeatAsync(CancellationToken cancellationToken) => _status.WriteHeartbeatAsync(cancellationToken);

    public Task AcknowledgeDdlAsync(long upToId, CancellationToken cancellationToken) => _setup.AcknowledgeDdlAsync(upToId, cancellationToken);

    public async Task<IReadOnlyList<string>> AddMissingTablesAsync(CancellationToken cancellationToken)
    {
        var added = await _setup.AddMissingTablesAsync(cancellationToken);
        _status.ForgetStall();
        if (added.Count > 0)
        {
            // Not awaited: the copy may take long, and the request has its answer already.
            _ = AnalyzeAfterCopyAsync();
        }

        return added;
    }

    public async Task<IReadOnlyList<DdlApplied>> ApplyDdlAsync(CancellationToken cancellationToken)
    {
        var applied = await _ddl.ApplyAsync(cancellationToken);
        _status.ForgetStall();
        return applied;
    }

    public Task<IReadOnlyList<string>> RefreshMaterializedViewsAsync(CancellationToken cancellationToken) => _views.RefreshOnGreenAsync(cancellationToken);

    public Task<IReadOnlyList<string>> PrepareGreenAsync(IProgress<TablePrepared>? progress, CancellationToken cancellationToken) => _statistics.PrepareAsync(progress, cancellationToken);

    public Task<IReadOnlyList<ReaderReplication>> ReadReadersAsync(Side side, IReadOnlyList<string> slots, CancellationToken cancellationToken) => ReaderStreams.ReadAsync(_sessions, side, slots, cancellationToken);

    public Task<VerifyReport> VerifyAsync(IProgress<TableVerification>? progress, CancellationToken cancellationToken) => _verifier.VerifyAsync(progress, cancellationToken);

    public Task RemoveAsync(CancellationToken cancellationToken) => _setup.RemoveAsync(cancellationToken);

    public Task<CheckReport> CheckSwitchoverAsync(SwitchoverGuardrailOptions options, CancellationToken cancellationToken) => _reach.GuardAsync(ct => _switchover.RunAsync(options, ct), cancellationToken);

    public Task WarmUpAsync(CancellationToken cancellationToken) => _reach.GuardAsync(
        async ct =>
        {
            await _sessions.WarmUpAsync(ct);
            foreach (var side in new[] { Side.Blue, Side.Green }.Where(s => Fencing.FencedByHba(_sessions.Spec, s)))
            {
                // Before the pause: on PostgreSQL 15 the local login's map needs a line per role.
                await using var conn = await _sessions.OpenAsync(side, ct);
                await HbaFence.MapRolesAsync(conn, ct);
            }
        },
        cancellationToken);

    public Task<string?> FencedLoginSocketAsync(CancellationToken cancellationToken) =>
        Fencing.FencedByHba(_sessions.Spec, Side.Green) ? _reach.GuardAsync(ct => HbaFence.LocalLoginSocketAsync(_sessions, Side.Green, ct), cancellationToken) : Task.FromResult<string?>(null);

    public Task PrepareFenceAsync(Side side, CancellationToken cancellationToken) => _reach.GuardAsync(ct => _fencing.PrepareFenceAsync(side, ct), cancellationToken);

    public Task FenceAsync(Side side, CancellationToken cancellationToken) => _reach.GuardAsync(ct => _fencing.FenceAsync(side, ct), cancellationToken);

    public Task UnfenceAsync(Side side, CancellationToken cancellationToken) => _reach.GuardAsync(ct => _fencing.UnfenceAsync(side, ct), cancellationToken);

    public Task OpenGreenAsync(Func<CancellationToken, Task> loginsBack, CancellationToken cancellationToken) => _reach.GuardAsync(ct => _fencing.UnfenceAsync(Side.Green, ct, loginsBack), cancellationToken);

    public Task<DrainResult> DrainAsync(Side side, TimeSpan budget, CancellationToken cancellationToken) => _reach.GuardAsync(ct => _fencing.DrainAsync(side, budget, ct), cancellationToken);

    /// <summary>See <see cref="IReplicationLink.OpenTransactionsQuery"/>.</summary>
    public const string OpenTransactions = "SELECT pid, usename, xact_start, state, left(query, 80) FROM pg_stat_activity WHERE xact_start IS NOT NULL ORDER BY xact_start";

    public string OpenTransactionsQuery => OpenTransactions;

    public Task<ReplicationPosition> MarkFinalPositionAsync(CancellationToken cancellationToken) => _reach.GuardAsync(_positions.MarkAsync, cancellationToken);

    public Task WaitForPositionAsync(ReplicationPosition position, CancellationToken cancellationToken) => _reach.GuardAsync(ct => _positions.WaitAsync(position, ct), cancellationToken);

    public Task<IReadOnlyList<SequenceSync>> SyncSequencesAsync(CancellationToken cancellationToken) => _reach.GuardAsync(_positions.SyncSequencesAsync, cancellationToken);

    public Task<IReadOnlyList<string>> SyncLoginsAsync(CancellationToken cancellationToken) => _reach.GuardAsync(_logins.SyncAsync, cancellationToken);

    public Task<ReplicationPosition> ReadPositionAsync(Side side, CancellationToken cancellationToken) => _reach.GuardAsync(ct => _positions.ReadAsync(side, ct), cancellationToken);

    /// <summary>
    /// Drops forward replication, then refreshes green's materialized views (the switchover's
    /// refresh): green has applied blue's last write by now and clients already reach it, so
    /// the refresh costs the write pause nothing; a view with a unique index is refreshed
    /// CONCURRENTLY, so readers are not blocked either. Past the flip this step is retried until
    /// it succeeds: a view whose query fails on green must not hold it forever, so such a view
    /// keeps the contents it got before AVAILABLE (populated, not current).
    /// </summary>
    public Task StopReplicationAsync(CancellationToken cancellationToken) => _reach.GuardAsync(
        async ct =>
        {
            await _setup.StopAsync(ct);
            try
            {
                await _views.RefreshOnGreenAsync(ct);
            }
            catch (Npgsql.PostgresException)
            {
                // See above: the views stay populated; `REFRESH MATERIALIZED VIEW` on green brings them current.
            }
        },
        cancellationToken);

    private async Task AnalyzeAfterCopyAsync()
    {
        try
        {
            await _statistics.PrepareWhenCopiedAsync(_stopping.Token);
        }
        catch (Exception ex) when (ex is OperationCanceledException or Npgsql.NpgsqlException or Teal.Core.Errors.TealException or ObjectDisposedException)
        {
            // Best effort: the guardrail green.statistics names any table left unanalyzed, with its fix.
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        _stopping.Dispose();
        await _setup.DisposeAsync();
        await _sessions.DisposeAsync();
    }

    public async Task<ReplicationPosition?> PrepareReverseReplicationAsync(CancellationToken cancellationToken) =>
        await _reach.GuardAsync(_reverse.PrepareAsync, cancellationToken);

    public Task DropReverseReplicationAsync(CancellationToken cancellationToken) => _reach.GuardAsync(_reverse.DropPreparedAsync, cancellationToken);

    public Task StartReverseReplicationAsync(ReplicationPosition from, CancellationToken cancellationToken) => _reach.GuardAsync(ct => _reverse.StartAsync(from, ct), cancellationToken);

    public Task WaitForCdcConsumersAsync(ReplicationPosition position, CancellationToken cancellationToken) => _reach.GuardAsync(ct => _cdc.WaitAsync(position, ct), cancellationToken);

    public Task<IReadOnlyList<CdcSlotCreated>> CreateCdcSlotsAsync(ReplicationPosition greenCaughtUp, CancellationToken cancellationToken) => _reach.GuardAsync(ct => _cdc.CreateAsync(greenCaughtUp, ct), cancellationToken);

    /// <summary>
    /// Ends reverse replication (this link's green is the old blue). Its sequences are set to
    /// production's first: it holds green's rows, so once unfenced it must not hand out their keys again.
    /// </summary>
    public Task FinishAsync(CancellationToken cancellationToken) => _reach.GuardAsync(
        async ct =>
        {
            await _positions.SyncSequencesAsync(ct);
            await _reverse.FinishAsync(ct);
        },
        cancellationToken);

}
