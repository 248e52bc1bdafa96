using System.Security.Cryptography;

namespace Teal.Core.Secrets;

/// <summary>References under which <see cref="ISecretStore"/> keeps a password.</summary>
public static class SecretReferences
{
    /// <summary>A fresh reference for an instance's password (stable across renames).</summary>
    public static string NewInstanceReference() => NewReference("instance");

    /// <summary>A fresh reference under <paramref name="prefix"/> (<c>instance</c>, <c>endpoint</c>).</summary>
    public static string NewReference(string prefix) => prefix + "/" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8));
}
