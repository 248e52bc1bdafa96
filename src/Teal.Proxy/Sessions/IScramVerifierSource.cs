using Teal.Core.Endpoints;

namespace Teal.Proxy.Sessions;

/// <summary>
/// Reads a role's stored password verifier on an instance (PgBouncer's <c>auth_query</c>), so that
/// the proxy can log a moved session in as its client's role without knowing the password.
/// </summary>
public interface IScramVerifierSource
{
    /// <summary><c>pg_authid.rolpassword</c> of <paramref name="role"/> on <paramref name="target"/>, or null when it has none or cannot log in.</summary>
    Task<string?> ReadAsync(EndpointTarget target, string role, CancellationToken cancellationToken);
}
