using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.Core.Guardrails;

namespace Teal.Core.Tests.Switchover.Support;

/// <summary>A link the executor's unit tests never reach: their steps only record what happens to them.</summary>
internal sealed class UnusedLink : IReplicationLink
{
    public Task<CheckReport> CheckPrerequisitesAsync(CancellationToken cancellationToken) => throw Unused();

    public Task CopySchemaAsync(CancellationToken cancellationToken) => throw Unused();

    public Task StartReplicationAsync(CancellationToken cancellationToken) => throw Unused();

    public Task<ReplicationSnapshot> ReadStatusAsync(CancellationToken cancellationToken) => throw Unused();

    public Task WriteHeartbeatAsync(CancellationToken cancellationToken) => throw Unused();

    public Task AcknowledgeDdlAsync(long upToId, CancellationToken cancellationToken) => throw Unused();

    public Task<IReadOnlyList<string>> AddMissingTablesAsync(CancellationToken cancellationToken) => throw Unused();

    public Task<IReadOnlyList<DdlApplied>> ApplyDdlAsync(CancellationToken cancellationToken) => throw Unused();

    public Task<IReadOnlyList<string>> RefreshMaterializedViewsAsync(CancellationToken cancellationToken) => throw Unused();

    public Task<VerifyReport> VerifyAsync(IProgress<TableVerification>? progress, CancellationToken cancellationToken) => throw Unused();

    public Task RemoveAsync(CancellationToken cancellationToken) => throw Unused();

    public Task WarmUpAsync(CancellationToken cancellationToken) => throw Unused();

    public Task<CheckReport> CheckSwitchoverAsync(SwitchoverGuardrailOptions options, CancellationToken cancellationToken) => throw Unused();

    public Task FenceAsync(Side side, CancellationToken cancellationToken) => throw Unused();

    public Task UnfenceAsync(Side side, CancellationToken cancellationToken) => throw Unused();

    public Task<DrainResult> DrainAsync(Side side, TimeSpan budget, CancellationToken cancellationToken) => throw Unused();

    public string OpenTransactionsQuery => "SELECT the open transactions";

    public Task<ReplicationPosition> MarkFinalPositionAsync(CancellationToken cancellationToken) => throw Unused();

    public Task WaitForPositionAsync(ReplicationPosition position, CancellationToken cancellationToken) => throw Unused();

    public Task<IReadOnlyList<SequenceSync>> SyncSequencesAsync(CancellationToken cancellationToken) => throw Unused();

    public Task<IReadOnlyList<string>> SyncLoginsAsync(CancellationToken cancellationToken) => throw Unused();

    public Task<ReplicationPosition> ReadPositionAsync(Side side, CancellationToken cancellationToken) => throw Unused();

    public Task StopReplicationAsync(CancellationToken cancellationToken) => throw Unused();

    public Task<ReplicationPosition?> PrepareReverseReplicationAsync(CancellationToken cancellationToken) => throw Unused();

    public Task DropReverseReplicationAsync(CancellationToken cancellationToken) => throw Unused();

    public Task StartReverseReplicationAsync(ReplicationPosition from, CancellationToken cancellationToken) => throw Unused();

    public Task FinishAsync(CancellationToken cancellationToken) => throw Unused();

    public Task WaitForCdcConsumersAsync(ReplicationPosition position, CancellationToken cancellationToken) => throw Unused();

    public Task<IReadOnlyList<CdcSlotCreated>> CreateCdcSlotsAsync(ReplicationPosition greenCaughtUp, CancellationToken cancellationToken) => throw Unused();

    private static NotSupportedException Unused() => new("the executor's unit tests run steps that do not use the link");
}
