using System.Security.Cryptography;
using System.Text;

namespace Teal.Proxy.Sessions;

/// <summary>
/// A role's SCRAM-SHA-256 verifier as PostgreSQL stores it in <c>pg_authid.rolpassword</c>:
/// <c>SCRAM-SHA-256$iterations:salt$StoredKey:ServerKey</c>.
/// </summary>
internal sealed record ScramVerifier(int Iterations, string Salt, byte[] StoredKey, byte[] ServerKey)
{
    /// <summary>Null for anything that is not a SCRAM-SHA-256 verifier (md5 hashes, no password).</summary>
    public static ScramVerifier? Parse(string? text)
    {
        if (text is null || !text.StartsWith("SCRAM-SHA-256$", StringComparison.Ordinal))
        {
            return null;
        }

        var parts = text["SCRAM-SHA-256$".Length..].Split('$');
        if (parts.Length != 2)
        {
            return null;
        }

        var head = parts[0].Split(':');
        var keys = parts[1].Split(':');
        if (head.Length != 2 || keys.Length != 2 || !int.TryParse(head[0], System.Globalization.CultureInfo.InvariantCulture, out var iterations))
        {
            return null;
        }

        try
        {
            return new ScramVerifier(iterations, head[1], Convert.FromBase64String(keys[0]), Convert.FromBase64String(keys[1]));
        }
        catch (FormatException)
        {
            return null;
        }
    }
}

/// <summary>
/// What the proxy keeps of a client's successful SCRAM-SHA-256 login, to log in again on the
/// client's behalf without its password (PgBouncer's SCRAM pass-through): the exchange's
/// AuthMessage and the client's proof. With the role's StoredKey these give the ClientKey
/// (proof XOR HMAC(StoredKey, AuthMessage)), and the ClientKey is all a SCRAM login needs. It is
/// password-equivalent for this verifier, so it lives only in this object, in memory, for the
/// connection's lifetime, and is never logged.
/// </summary>
internal sealed class ScramCapture
{
    private string? _clientFirstBare;
    private string? _serverFirst;
    private string? _clientFinalWithoutProof;
    private byte[]? _proof;

    public string? Salt { get; private set; }

    public int Iterations { get; private set; }

    /// <summary>True once the server accepted the exchange the capture saw whole.</summary>
    public bool Complete { get; private set; }

    public void OnClientFirst(string message)
    {
        // gs2 header ("n,," or "y,,"), then client-first-message-bare. A channel-binding header
        // ("p=...") cannot come: neither the proxy nor a server it relays a login from offers
        // SCRAM-SHA-256-PLUS (the client's TLS ends at the proxy).
        var second = message.IndexOf(',', message.IndexOf(',', StringComparison.Ordinal) + 1);
        _clientFirstBare = second < 0 ? null : message[(second + 1)..];
    }

    public void OnServerFirst(string message)
    {
        _serverFirst = message;
        var attributes = Attributes(message);
        Salt = attributes.GetValueOrDefault('s');
        Iterations = int.TryParse(attributes.GetValueOrDefault('i'), System.Globalization.CultureInfo.InvariantCulture, out var i) ? i : 0;
    }

    public void OnClientFinal(string message)
    {
        var at = message.LastIndexOf(",p=", StringComparison.Ordinal);
        if (at < 0)
        {
            return;
        }

        _clientFinalWithoutProof = message[..at];
        try
        {
            _proof = Convert.FromBase64String(message[(at + 3)..]);
        }
        catch (FormatException)
        {
            _proof = null;
        }
    }

    public void OnAuthenticated() => Complete = _clientFirstBare is not null && _serverFirst is not null && _clientFinalWithoutProof is not null && _proof is not null;

    /// <summary>
    /// The client's ClientKey if <paramref name="verifier"/> is the one the client proved itself
    /// against (same salt and iterations, and H(ClientKey) = StoredKey); null otherwise, e.g.
    /// when the role's password differs on the server the session moves to.
    /// </summary>
    public byte[]? ClientKey(ScramVerifier verifier)
    {
        if (!Complete || verifier.Salt != Salt || verifier.Iterations != Iterations)
        {
            return null;
        }

        var authMessage = $"{_clientFirstBare},{_serverFirst},{_clientFinalWithoutProof}";
        var signature = HMACSHA256.HashData(verifier.StoredKey, Encoding.UTF8.GetBytes(authMessage));
        if (signature.Length != _proof!.Length) // Complete guarantees a proof.
        {
            return null;
        }

        var clientKey = new byte[signature.Length];
        for (var i = 0; i < clientKey.Length; i++)
        {
            clientKey[i] = (byte)(_proof[i] ^ signature[i]);
        }

        return CryptographicOperations.FixedTimeEquals(SHA256.HashData(clientKey), verifier.StoredKey) ? clientKey : null;
    }

    /// <summary>The server's signature of the exchange (its SASLFinal's <c>v=</c>), once the client proved itself.</summary>
    public string ServerSignature(ScramVerifier verifier) =>
        Convert.ToBase64String(HMACSHA256.HashData(verifier.ServerKey, Encoding.UTF8.GetBytes($"{_clientFirstBare},{_serverFirst},{_clientFinalWithoutProof}")));

    /// <summary>The attributes (<c>r=</c>, <c>s=</c>, <c>i=</c>, <c>v=</c>, <c>e=</c>) of a SCRAM message.</summary>
    public static Dictionary<char, string> Attributes(string message)
    {
        var attributes = new Dictionary<char, string>();
        foreach (var part in message.Split(','))
        {
            if (part.Length >= 2 && part[1] == '=')
            {
                attributes.TryAdd(part[0], part[2..]);
            }
        }

        return attributes;
    }
}
