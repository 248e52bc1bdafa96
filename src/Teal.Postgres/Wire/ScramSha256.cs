using System.Security.Cryptography;
using System.Text;

namespace Teal.Postgres.Wire;

/// <summary>
/// The client side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL and PgBouncer speak it:
/// no channel binding (no TLS here), and an empty user name in the client-first message because
/// the server takes the user from the startup packet. The server's signature is checked, so a
/// server that does not know the password cannot pretend the login succeeded.
/// </summary>
internal sealed class ScramSha256
{
    public const string Mechanism = "SCRAM-SHA-256";

    // "n,," = no channel binding, no authzid; sent base64-encoded again in the final message.
    private const string Gs2Header = "n,,";

    private readonly string _password;
    private readonly string _clientNonce;
    private readonly string _clientFirstBare;
    private byte[]? _expectedServerSignature;

    /// <param name="password">The user's password.</param>
    /// <param name="clientNonce">Fixed only by tests reproducing RFC 7677's example; random otherwise.</param>
    /// <param name="user">Empty for PostgreSQL (it uses the startup packet's user); RFC 7677's example names one.</param>
    public ScramSha256(string password, string? clientNonce = null, string user = "")
    {
        _password = password;
        _clientNonce = clientNonce ?? Convert.ToBase64String(RandomNumberGenerator.GetBytes(18));
        _clientFirstBare = "n=" + user + ",r=" + _clientNonce;
    }

    public string ClientFirstMessage => Gs2Header + _clientFirstBare;

    /// <summary>Answers the server-first message (<c>r=…,s=…,i=…</c>) with the client-final message.</summary>
    public string ClientFinalMessage(string serverFirst)
    {
        var attributes = ParseAttributes(serverFirst);
        if (!attributes.TryGetValue('r', out var nonce) || !attributes.TryGetValue('s', out var salt) || !attributes.TryGetValue('i', out var iterationsText))
        {
            throw new PostgresWireException("ERROR", "08P01", "the server's SCRAM challenge is malformed");
        }

        // The server must extend our nonce; anything else is a replay or a confused server.
        if (!nonce.StartsWith(_clientNonce, StringComparison.Ordinal) || nonce.Length == _clientNonce.Length)
        {
            throw new PostgresWireException("ERROR", "08P01", "the server's SCRAM nonce does not extend the client's");
        }

        if (!int.TryParse(iterationsText, System.Globalization.CultureInfo.InvariantCulture, out var iterations) || iterations < 1)
        {
            throw new PostgresWireException("ERROR", "08P01", "the server's SCRAM iteration count is invalid");
        }

        // PostgreSQL applies SASLprep to the password; for the ASCII passwords Teal generates and
        // operators type it is the identity, and the server falls back to the raw bytes otherwise.
        var saltedPassword = Rfc2898DeriveBytes.Pbkdf2(Encoding.UTF8.GetBytes(_password), Convert.FromBase64String(salt), iterations, HashAlgorithmName.SHA256, 32);
        var clientKey = HMACSHA256.HashData(saltedPassword, "Client Key"u8);
        var storedKey = SHA256.HashData(clientKey);
        var clientFinalWithoutProof = "c=" + Convert.ToBase64String(Encoding.ASCII.GetBytes(Gs2Header)) + ",r=" + nonce;
        var authMessage = Encoding.UTF8.GetBytes(_clientFirstBare + "," + serverFirst + "," + clientFinalWithoutProof);
        var clientSignature = HMACSHA256.HashData(storedKey, authMessage);
        var proof = new byte[clientKey.Length];
        for (var i = 0; i < proof.Length; i++)
        {
            proof[i] = (byte)(clientKey[i] ^ clientSignature[i]);
        }

        var serverKey = HMACSHA256.HashData(saltedPassword, "Server Key"u8);
        _expectedServerSignature = HMACSHA256.HashData(serverKey, authMessage);
        return clientFinalWithoutProof + ",p=" + Convert.ToBase64String(proof);
    }

    /// <summary>Checks the server-final message (<c>v=…</c>): the server proves it knew the password too.</summary>
    public void VerifyServerFinal(string serverFinal)
    {
        var attributes = ParseAttributes(serverFinal);
        if (attributes.TryGetValue('e', out var error))
        {
            throw new PostgresWireException("FATAL", "28P01", $"SCRAM authentication failed: {error}");
        }

        if (_expectedServerSignature is null || !attributes.TryGetValue('v', out var signature)
            || !CryptographicOperations.FixedTimeEquals(Convert.FromBase64String(signature), _expectedServerSignature))
        {
            throw new PostgresWireException("FATAL", "28P01", "the server's SCRAM signature does not match: it does not know the password");
        }
    }

    private static Dictionary<char, string> ParseAttributes(string message)
    {
        var attributes = new Dictionary<char, string>();
        foreach (var part in message.Split(','))
        {
            if (part.Length >= 2 && part[1] == '=')
            {
                attributes[part[0]] = part[2..];
            }
        }

        return attributes;
    }
}
