using Teal.Core.Deployments;

namespace Teal.Core.Engines;

/// <summary>What <see cref="IReplicationLink.ReadStatusAsync"/> saw.</summary>
public sealed record ReplicationSnapshot(ReplicationState State)
{
    public string? Reason { get; init; }

    public long? LagBytes { get; init; }

    public long? RetainedBytes { get; init; }

    public double? LagSeconds { get; init; }

    public bool WorkerRunning { get; init; }

    /// <summary>Per-table initial copy state (all Ready once the copy is done).</summary>
    public IReadOnlyList<TableProgress> Tables { get; init; } = [];

    public IReadOnlyList<PendingDdl> PendingDdl { get; init; } = [];

    public IReadOnlyList<string> SkippedTables { get; init; } = [];

    /// <summary>Green's apply worker keeps failing (errors counted recently, or it is down after errors).</summary>
    public bool Stalled { get; init; }

    /// <summary>The apply worker's last error, quoted from green when it can be read there.</summary>
    public string? ApplyError { get; init; }

    /// <summary>Schemas, tables, partitions and columns blue has and green lacks.</summary>
    public IReadOnlyList<string> SchemaDifferences { get; init; } = [];

    /// <summary>Transactions blue has and green has not applied (MariaDB/MySQL: the GTID distance); null where the engine has no such count.</summary>
    public long? LagTransactions { get; init; }

    /// <summary>
    /// DDL blue ran that replication carries to green by itself (MariaDB/MySQL binlog): recorded
    /// as events, not a degradation. Recent statements, each with an id that only grows.
    /// </summary>
    public IReadOnlyList<PendingDdl> ReplicatedDdl { get; init; } = [];

    /// <summary>The deployment's CDC slots on both sides, as the link sees them.</summary>
    public IReadOnlyList<CdcSlotSnapshot> CdcSlots { get; init; } = [];
}

/// <summary>One CDC slot on one side of the link: whether it exists, its plugin, and how far its consumer confirmed.</summary>
/// <param name="Side">The link's side (for a reversed link, blue is production green).</param>
/// <param name="Name">The slot's name (the same on both sides).</param>
public sealed record CdcSlotSnapshot(Side Side, string Name)
{
    public bool Exists { get; init; }

    public string? Plugin { get; init; }

    /// <summary>Whether a consumer is connected to it now.</summary>
    public bool Active { get; init; }

    /// <summary>How far its consumer confirmed (PostgreSQL: confirmed_flush_lsn).</summary>
    public string? ConfirmedPosition { get; init; }

    /// <summary>The side's current position minus <see cref="ConfirmedPosition"/>, in bytes.</summary>
    public long? LagBytes { get; init; }
}

/// <summary>A CDC slot a cutover made on the side it opened.</summary>
/// <param name="Name">The slot's name, as on the side left.</param>
/// <param name="Plugin">Its output plugin, as on the side left.</param>
/// <param name="StartPosition">Where consumers of the new slot start: its consistent point (PostgreSQL LSN).</param>
public sealed record CdcSlotCreated(string Name, string Plugin, string StartPosition)
{
    /// <summary>A slot of that name was already there from an earlier cutover (stale: it decoded replicated writes) and was replaced.</summary>
    public bool Replaced { get; init; }

    /// <summary>Whether the slot is synchronized to physical standbys (PostgreSQL 17+ <c>failover</c>).</summary>
    public bool Failover { get; init; }
}

/// <summary>An engine position: PostgreSQL LSN, or binlog file/position and GTID set.</summary>
public sealed record ReplicationPosition(string Value)
{
    /// <summary>Extra coordinates (binlog file and position, GTID) where the engine has them.</summary>
    public IReadOnlyDictionary<string, string> Details { get; init; } = new Dictionary<string, string>();

    public override string ToString() => Value;
}

/// <summary>What a drain did: transactions that finished in time, sessions terminated while in one.</summary>
public sealed record DrainResult(int FinishedInTime, int Terminated)
{
    /// <summary>Sessions without a transaction that were closed (a fenced side keeps no client session).</summary>
    public int ClosedIdle { get; init; }
}

public sealed record SequenceSync(string Sequence, long? BlueValue, long? GreenValueBefore, long? GreenValueAfter);

/// <summary>Thresholds of the engine-side guardrails.</summary>
public sealed record SwitchoverGuardrailOptions(TimeSpan SwitchoverTimeout)
{
    /// <summary>A write transaction on blue older than this refuses the switchover.</summary>
    public TimeSpan LongTransactionThreshold { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Assumed apply rate on green, to judge whether the lag drains within the timeout.</summary>
    public long DrainBytesPerSecond { get; init; } = 16 * 1024 * 1024;

    /// <summary>
    /// The operator accepts that the fence locks out every database on blue's server, not only
    /// the deployment's (the fence acts on logins, which are server-wide).
    /// </summary>
    public bool FenceWholeServer { get; init; }
}

/// <summary>Result of comparing one table.</summary>
public sealed record TableVerification(string Table, long BlueRows, long GreenRows, string BlueChecksum, string GreenChecksum, double Seconds)
{
    /// <summary>Primary-key chunks the table was compared in (1 when it is compared whole).</summary>
    public int Chunks { get; init; } = 1;

    /// <summary>Chunks that differ and stayed the same on both sides when re-checked: real differences.</summary>
    public int DifferentChunks { get; init; }

    /// <summary>Chunks still changing on blue at every re-check: not comparable now, not a difference.</summary>
    public int ChangingChunks { get; init; }

    /// <summary>Why the table could not be compared (missing on green, columns differ, …).</summary>
    public string? Problem { get; init; }

    /// <summary>For a partitioned table that differs: its partitions that differ (<c>schema.partition</c>).</summary>
    public IReadOnlyList<string> DifferingPartitions { get; init; } = [];

    /// <summary>
    /// For a table with an integer key (or a key whose first column is one) that differs: key values (that first column) of rows that differ (changed, or on
    /// one side only), read from the differing chunks; at most a few dozen.
    /// </summary>
    public IReadOnlyList<string> DifferingKeys { get; init; } = [];

    /// <summary>
    /// No difference found. Chunks still changing under load are reported in
    /// <see cref="ChangingChunks"/> and do not count as differences; the totals then differ.
    /// </summary>
    public bool Matches => Problem is null && DifferentChunks == 0 && (ChangingChunks > 0 || (BlueRows == GreenRows && BlueChecksum == GreenChecksum));
}

/// <summary>Every difference between blue and green, and how fast they were compared.</summary>
public sealed record VerifyReport(string Position, IReadOnlyList<TableVerification> Tables)
{
    public IReadOnlyList<SequenceComparison> Sequences { get; init; } = [];

    /// <summary>Engine version and parameter values checked on green.</summary>
    public IReadOnlyList<SettingComparison> Settings { get; init; } = [];

    public double Seconds { get; init; }

    public long RowsPerSide => Tables.Sum(t => Math.Max(t.BlueRows, t.GreenRows));

    /// <summary>Rows compared per second on each side (both sides are read concurrently).</summary>
    public double RowsPerSecond => Seconds > 0 ? RowsPerSide / Seconds : 0;

    public bool Matches => Tables.All(t => t.Matches) && Sequences.All(s => s.Matches) && Settings.All(s => s.Matches);
}

public sealed record SequenceComparison(string Sequence, long? Blue, long? Green)
{
    /// <summary>Before switchover green's sequences lag on purpose (they are synced at switchover); this compares after.</summary>
    public bool Matches { get; init; } = true;
}

public sealed record SettingComparison(string Name, string Expected, string Actual)
{
    public bool Matches => string.Equals(Expected, Actual, StringComparison.OrdinalIgnoreCase);
}
