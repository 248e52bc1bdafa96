namespace Teal.Core.Deployments;

/// <summary>One reader of a deployment's green as <c>teal show</c> and the API show it.</summary>
/// <param name="Name">The reader's instance name.</param>
/// <param name="State">The writer's walsender state (<c>streaming</c>), or <c>not connected</c>.</param>
public sealed record ReaderStatus(string Name, string State)
{
    /// <summary>WAL not yet replayed on the reader, in bytes.</summary>
    public long? LagBytes { get; init; }

    /// <summary>Replay lag in seconds (null while the writer is idle).</summary>
    public double? LagSeconds { get; init; }

    public string? Address { get; init; }

    /// <summary>The reader's replication slot on its writer.</summary>
    public string? Slot { get; init; }
}
