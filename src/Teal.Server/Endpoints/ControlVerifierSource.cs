using Teal.Core.Endpoints;
using Teal.Core.Engines;
using Teal.Core.Instances;
using Teal.Core.Secrets;
using Teal.Core.State;
using Teal.Postgres.Connections;
using Teal.Proxy.Sessions;

namespace Teal.Server.Endpoints;

/// <summary>
/// The proxy's auth query: a role's SCRAM verifier read from <c>pg_authid</c> on the instance a
/// session moves to, as Teal's own superuser login (the registered user before a deployment has
/// created it). Only the verifier is read; it never leaves the proxy's memory.
/// </summary>
public sealed class ControlVerifierSource(IStateStore state, ISecretStore secrets) : IScramVerifierSource
{
    public async Task<string?> ReadAsync(EndpointTarget target, string role, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(target);
        var instance = await state.GetInstanceAsync(target.Instance, cancellationToken);
        if (instance is null || instance.Engine != EngineKind.Postgres)
        {
            return null;
        }

        var control = secrets.Read(Teal.Core.Deployments.DeploymentLinks.ControlSecretReference(instance));
        var login = control is not null
            ? ConnectionInfo.For(instance, control) with { User = Teal.Core.Deployments.DeploymentLinks.ControlUser }
            : ConnectionInfo.For(instance, instance.SecretRef is null ? null : secrets.Read(instance.SecretRef));
        return await RoleVerifiers.ReadAsync(login with { Host = target.Host, Port = target.Port }, role, cancellationToken);
    }
}
