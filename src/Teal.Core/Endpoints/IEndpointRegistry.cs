namespace Teal.Core.Endpoints;

/// <summary>The live endpoints Teal serves or drives, found by the instance they route to.</summary>
public interface IEndpointRegistry
{
    /// <summary>Endpoints whose route is <paramref name="instance"/> (by name; the switchover moves these).</summary>
    Task<IReadOnlyList<IEndpoint>> ForInstanceAsync(string instance, CancellationToken cancellationToken);
}
