using System.Security.Cryptography;
using Teal.Core.Secrets;

namespace Teal.Server.Hosting;

/// <summary>
/// The bearer token every mutating API call needs. Generated on the first start into
/// <c>DATA_DIR/token</c> (created 0600), so a local CLI running as the same user finds it there.
/// </summary>
public sealed record ServerToken(string Value)
{
    public static ServerToken LoadOrCreate(string path)
    {
        if (File.Exists(path))
        {
            // An operator's restore or copy may have widened the mode: narrow it again.
            PrivateFile.Narrow(path);
            var existing = File.ReadAllText(path).Trim();
            if (existing.Length > 0)
            {
                return new ServerToken(existing);
            }
        }

        var token = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
        PrivateFile.Replace(path, token + "\n");
        return new ServerToken(token);
    }

    /// <summary>Where a shared state store keeps the token (sealed, as every secret there).</summary>
    public const string SharedReference = "server/token";

    /// <summary>
    /// With a shared state store every control-plane machine accepts the same token, so clients
    /// keep theirs when another machine takes over: the first machine stores its token there; the
    /// others take that one and write it to their own token file.
    /// </summary>
    public static ServerToken Shared(string path, Secrets.PostgresSecretStore secrets)
    {
        ArgumentNullException.ThrowIfNull(secrets);
        var local = File.Exists(path) ? LoadOrCreate(path).Value : null;
        var shared = secrets.WriteIfAbsent(SharedReference, local ?? Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32)));
        if (shared != local)
        {
            PrivateFile.Replace(path, shared + "\n");
        }

        return new ServerToken(shared);
    }

    /// <summary>Constant-time comparison, so response timing does not leak the token.</summary>
    public bool Matches(string? presented) =>
        presented is not null
        && CryptographicOperations.FixedTimeEquals(System.Text.Encoding.UTF8.GetBytes(presented), System.Text.Encoding.UTF8.GetBytes(Value));
}
