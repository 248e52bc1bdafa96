using System.Security.Cryptography;
using System.Text;
using Teal.Core.Secrets;

namespace Teal.Server.Secrets;

/// <summary>
/// The key that seals passwords kept in a shared state database (<c>state.key</c>, 0600): the
/// database holds only ciphertext, and every control-plane machine is given the same key file.
/// AES-256-GCM with the reference as associated data, so a sealed value cannot be moved to
/// another reference. <see cref="Id"/> (a hash of the key, not the key) is stored in the
/// database so that a machine with another key is refused at start instead of reading garbage.
/// </summary>
public sealed class StateKey
{
    public const string FileName = "state.key";

    private const byte Format = 1;
    private const int NonceSize = 12;
    private const int TagSize = 16;

    private readonly byte[] _key;

    private StateKey(byte[] key)
    {
        _key = key;
        Id = Convert.ToHexStringLower(SHA256.HashData([.. "teal state key id:"u8, .. key]))[..16];
    }

    /// <summary>Names the key without revealing it.</summary>
    public string Id { get; }

    /// <summary>The key in <paramref name="path"/>, or null when there is no such file.</summary>
    public static StateKey? Load(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }

        PrivateFile.Narrow(path);
        byte[] key;
        try
        {
            key = Convert.FromBase64String(File.ReadAllText(path).Trim());
        }
        catch (FormatException ex)
        {
            throw new Core.Errors.TealException("state.key-invalid", $"the key file {path} is not a Teal state key", "copy state.key again from a control-plane machine that uses this state store", ex);
        }

        return key.Length == 32
            ? new StateKey(key)
            : throw new Core.Errors.TealException("state.key-invalid", $"the key file {path} is not a Teal state key", "copy state.key again from a control-plane machine that uses this state store");
    }

    /// <summary>A new random key, written 0600 to <paramref name="path"/>.</summary>
    public static StateKey Create(string path)
    {
        var key = RandomNumberGenerator.GetBytes(32);
        PrivateFile.WriteNew(path, Convert.ToBase64String(key) + "\n");
        return new StateKey(key);
    }

    public byte[] Seal(string reference, string value)
    {
        var plain = Encoding.UTF8.GetBytes(value);
        var sealedValue = new byte[1 + NonceSize + TagSize + plain.Length];
        sealedValue[0] = Format;
        var nonce = sealedValue.AsSpan(1, NonceSize);
        RandomNumberGenerator.Fill(nonce);
        using var aes = new AesGcm(_key, TagSize);
        aes.Encrypt(nonce, plain, sealedValue.AsSpan(1 + NonceSize + TagSize), sealedValue.AsSpan(1 + NonceSize, TagSize), Encoding.UTF8.GetBytes(reference));
        return sealedValue;
    }

    public string Open(string reference, byte[] sealedValue)
    {
        ArgumentNullException.ThrowIfNull(sealedValue);
        if (sealedValue.Length < 1 + NonceSize + TagSize || sealedValue[0] != Format)
        {
            throw new CryptographicException($"the secret {reference} in the state database is not sealed in a format this Teal reads");
        }

        var plain = new byte[sealedValue.Length - 1 - NonceSize - TagSize];
        using var aes = new AesGcm(_key, TagSize);
        aes.Decrypt(sealedValue.AsSpan(1, NonceSize), sealedValue.AsSpan(1 + NonceSize + TagSize), sealedValue.AsSpan(1 + NonceSize, TagSize), plain, Encoding.UTF8.GetBytes(reference));
        return Encoding.UTF8.GetString(plain);
    }
}
