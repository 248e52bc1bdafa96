namespace Teal.Core.Deployments;

public enum DeploymentTaskKind
{
    ProvisionGreen,
    CopySchema,
    CopyData,
    CatchUp,
    CreateTopology,

    /// <summary>VACUUM (ANALYZE) on green after the initial copy (ANALYZE_GREEN).</summary>
    AnalyzeGreen,
}

public enum DeploymentTaskStatus
{
    Pending,
    InProgress,
    Completed,
    Failed,
}

/// <summary>One step of creating a deployment, with its progress.</summary>
public sealed record DeploymentTask(DeploymentTaskKind Kind, DeploymentTaskStatus Status)
{
    /// <summary>0–100 where progress can be measured; null otherwise.</summary>
    public double? Percent { get; init; }

    public string? Message { get; init; }

    public DateTimeOffset? StartedAt { get; init; }

    public DateTimeOffset? CompletedAt { get; init; }

    /// <summary>Per-table progress (COPY_DATA).</summary>
    public IReadOnlyList<TableProgress> Tables { get; init; } = [];
}

/// <summary>Copy progress of one table during COPY_DATA.</summary>
public sealed record TableProgress(string Table, TableCopyState State)
{
    public long? Rows { get; init; }

    public long? Bytes { get; init; }
}

public enum TableCopyState
{
    Pending,
    Copying,
    Copied,
    Ready,
}
