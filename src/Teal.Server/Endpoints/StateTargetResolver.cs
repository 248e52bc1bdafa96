using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Core.State;
using Teal.Proxy.Hosting;

namespace Teal.Server.Endpoints;

/// <summary>
/// Where an instance is reached, as the state store has it now: the proxy's resolver for
/// canary instances. Apart from <see cref="LiveEndpoints"/>, which needs the proxy itself.
/// </summary>
public sealed class StateTargetResolver(IStateStore state) : IEndpointTargetResolver
{
    public async Task<EndpointTarget> ResolveAsync(string instance, CancellationToken cancellationToken)
    {
        var found = await state.GetInstanceAsync(instance, cancellationToken)
            ?? throw new TealException("instance.not-found", $"no instance named '{instance}'", "see `teal instance list`") { Kind = TealErrorKind.NotFound };
        return new EndpointTarget(found.Name, found.Host, found.Port, found.Database);
    }
}
