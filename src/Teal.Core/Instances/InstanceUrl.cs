namespace Teal.Core.Instances;

/// <summary>A connection URI with the password, given on explicit request only.</summary>
public sealed record InstanceUrl(string Name, string Url);
