namespace Teal.Core.Engines;

/// <summary>One reader's stream as its writer sees it (PostgreSQL: <c>pg_stat_replication</c> joined to the reader's slot).</summary>
/// <param name="Slot">The reader's physical replication slot on the writer.</param>
/// <param name="State">The walsender's state (<c>streaming</c>, <c>catchup</c>, …); null when no reader is connected.</param>
/// <param name="LagBytes">WAL the writer has that the reader has not replayed yet; null when unknown.</param>
public sealed record ReaderReplication(string Slot, string? State, long? LagBytes)
{
    /// <summary>Replay lag in seconds as the writer last measured it; null when idle or unknown.</summary>
    public double? LagSeconds { get; init; }

    public bool Streaming => State == "streaming";
}
