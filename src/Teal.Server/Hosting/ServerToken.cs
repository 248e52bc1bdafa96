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

    /// <summary>Constant-time comparison, so response timing does not leak the token.</summary>
    public bool Matches(string? presented) =>
        presented is not null
        && CryptographicOperations.FixedTimeEquals(System.Text.Encoding.UTF8.GetBytes(presented), System.Text.Encoding.UTF8.GetBytes(Value));
}
