namespace Teal.Core.Instances;

/// <summary>
/// Register an existing server (<see cref="Connection"/>) or create a managed one
/// (<see cref="Version"/>, with <see cref="Engine"/>, <see cref="Port"/> and <see cref="Parameters"/>).
/// </summary>
public sealed record AddInstanceRequest(string Name)
{
    public string? Connection { get; init; }

    /// <summary>
    /// The password for <see cref="Connection"/>, given apart from it so that the CLI never puts
    /// it in a command line (<c>--password-file</c>, <c>--password-env</c>, <c>--password-stdin</c>).
    /// </summary>
    public string? Password { get; init; }

    public EngineKind Engine { get; init; } = EngineKind.Postgres;

    public string? Version { get; init; }

    public int? Port { get; init; }

    public IReadOnlyDictionary<string, string> Parameters { get; init; } = new Dictionary<string, string>();

    /// <summary><c>HOST:PORT</c>: also create a proxy endpoint named after the instance, listening there.</summary>
    public string? Endpoint { get; init; }
}
