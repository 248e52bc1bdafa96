using Teal.Core.Engines;
using Teal.Core.Guardrails;
using Teal.Postgres.Engines;

namespace Teal.Postgres.Replication;

/// <summary>Logical replication (publication on blue, subscription on green) for one deployment.</summary>
public sealed class PostgresReplicationLink(LinkSpec spec, PostgresEngineCatalog catalog, TimeProvider time) : IReplicationLink
{
    private readonly LinkSpec _spec = spec;
    private readonly PostgresEngineCatalog _catalog = catalog;
    private readonly TimeProvider _time = time;

    public Task<CheckReport> CheckPrerequisitesAsync(CancellationToken cancellationToken) => throw Missing();

    public Task CopySchemaAsync(CancellationToken cancellationToken) => throw Missing();

    public Task StartReplicationAsync(CancellationToken cancellationToken) => throw Missing();

    public Task<ReplicationSnapshot> ReadStatusAsync(CancellationToken cancellationToken) => throw Missing();

    public Task WriteHeartbeatAsync(CancellationToken cancellationToken) => throw Missing();

    public Task AcknowledgeDdlAsync(long upToId, CancellationToken cancellationToken) => throw Missing();

    public Task<IReadOnlyList<string>> AddMissingTablesAsync(CancellationToken cancellationToken) => throw Missing();

    public Task<VerifyReport> VerifyAsync(IProgress<TableVerification>? progress, CancellationToken cancellationToken) => throw Missing();

    public Task RemoveAsync(CancellationToken cancellationToken) => throw Missing();

    public Task<CheckReport> CheckSwitchoverAsync(SwitchoverGuardrailOptions options, CancellationToken cancellationToken) => throw Missing();

    public Task FenceAsync(Side side, CancellationToken cancellationToken) => throw Missing();

    public Task UnfenceAsync(Side side, CancellationToken cancellationToken) => throw Missing();

    public Task<DrainResult> DrainAsync(Side side, TimeSpan budget, CancellationToken cancellationToken) => throw Missing();

    public Task<ReplicationPosition> MarkFinalPositionAsync(CancellationToken cancellationToken) => throw Missing();

    public Task WaitForPositionAsync(ReplicationPosition position, CancellationToken cancellationToken) => throw Missing();

    public Task<IReadOnlyList<SequenceSync>> SyncSequencesAsync(CancellationToken cancellationToken) => throw Missing();

    public Task<ReplicationPosition> ReadPositionAsync(Side side, CancellationToken cancellationToken) => throw Missing();

    public Task StopReplicationAsync(CancellationToken cancellationToken) => throw Missing();

    private NotSupportedException Missing() => new($"replication link {_spec.Name} ({_catalog.Options.EnginesDirectory}, {_time.GetUtcNow()}) is not built yet");
}
