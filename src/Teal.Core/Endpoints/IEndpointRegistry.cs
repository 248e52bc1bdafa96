namespace Teal.Core.Endpoints;

/// <summary>
/// The live endpoints Teal serves or drives. One way to find them: from their declarations in
/// the state store, each asked of what serves its kind.
/// </summary>
public interface IEndpointRegistry
{
    /// <summary>Endpoints whose route is <paramref name="instance"/> (by name; the switchover moves these).</summary>
    Task<IReadOnlyList<IEndpoint>> ForInstanceAsync(string instance, CancellationToken cancellationToken);

    /// <summary>The live endpoint serving <paramref name="spec"/>, or null when nothing serves it right now.</summary>
    Task<IEndpoint?> FindAsync(EndpointSpec spec, CancellationToken cancellationToken);
}
