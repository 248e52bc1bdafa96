namespace Teal.Core.Instances;

/// <summary>Where managed instances get their directories.</summary>
public sealed record InstanceOptions
{
    /// <summary><c>DATA_DIR/instances</c>; an instance's files are in <c>instances/NAME</c>.</summary>
    public required string InstancesDirectory { get; init; }
}
