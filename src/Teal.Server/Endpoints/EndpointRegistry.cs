using Teal.Core.Endpoints;
using Teal.Proxy.Hosting;

namespace Teal.Server.Endpoints;

/// <summary>The switchover's view of every endpoint kind: the proxy's listeners and the PgBouncers Teal drives.</summary>
public sealed class EndpointRegistry(ProxyManager proxies, PgBouncerEndpoints pgBouncers) : IEndpointRegistry
{
    public async Task<IReadOnlyList<IEndpoint>> ForInstanceAsync(string instance, CancellationToken cancellationToken)
    {
        var proxied = await proxies.ForInstanceAsync(instance, cancellationToken);
        var driven = await pgBouncers.ForInstanceAsync(instance, cancellationToken);
        return [.. proxied, .. driven];
    }
}
