using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Teal.Proxy.Protocol;

namespace Teal.Proxy.Sessions;

/// <summary>
/// The client side of a SCRAM-SHA-256 login made with a ClientKey instead of a password: what the
/// proxy sends a server to log a client in on its behalf (PgBouncer's pass-through), at the
/// client's first login as when its session moves.
/// </summary>
internal sealed class ScramLogin(ScramVerifier verifier, byte[] clientKey)
{
    public const string Mechanism = "SCRAM-SHA-256";

    private readonly string _nonce = Convert.ToBase64String(RandomNumberGenerator.GetBytes(18));
    private string? _expectedSignature;

    private string ClientFirstBare => "n=,r=" + _nonce;

    /// <summary>
    /// The answer to the server's authentication request <paramref name="code"/> (10 SASL,
    /// 11 SASLContinue, 12 SASLFinal): the message to send, null when none is due (12), or a
    /// failure in words.
    /// </summary>
    public (byte[]? Send, string? Failure) Answer(int code, string data)
    {
        switch (code)
        {
            case 10:
                return (new MessageWriter().SaslInitialResponse(Mechanism, "n,," + ClientFirstBare).ToArray(), null);
            case 11:
                var attributes = ScramCapture.Attributes(data);
                var serverNonce = attributes.GetValueOrDefault('r');
                if (serverNonce is null || !serverNonce.StartsWith(_nonce, StringComparison.Ordinal)
                    || attributes.GetValueOrDefault('s') != verifier.Salt || attributes.GetValueOrDefault('i') != verifier.Iterations.ToString(CultureInfo.InvariantCulture))
                {
                    return (null, "the server's SCRAM challenge does not match its stored verifier");
                }

                var finalWithoutProof = "c=biws,r=" + serverNonce;
                var authMessage = Encoding.UTF8.GetBytes($"{ClientFirstBare},{data},{finalWithoutProof}");
                var proof = HMACSHA256.HashData(verifier.StoredKey, authMessage);
                for (var i = 0; i < proof.Length; i++)
                {
                    proof[i] ^= clientKey[i];
                }

                _expectedSignature = Convert.ToBase64String(HMACSHA256.HashData(verifier.ServerKey, authMessage));
                return (new MessageWriter().SaslResponse($"{finalWithoutProof},p={Convert.ToBase64String(proof)}").ToArray(), null);
            case 12 when _expectedSignature is not null:
                // The server proves it knows the verifier too; a server that cannot is not the one Teal reads verifiers from.
                return ScramCapture.Attributes(data).GetValueOrDefault('v') == _expectedSignature ? (null, null) : (null, "the server's SCRAM signature is wrong");
            default:
                return (null, "the server's SCRAM exchange is out of order");
        }
    }
}

/// <summary>
/// The server side of a SCRAM-SHA-256 login against a role's stored verifier: the proxy checks
/// the client's password itself, as PostgreSQL would, and keeps what a successful exchange
/// yields to log in to servers on the client's behalf. Channel binding is not offered: the
/// client's TLS ends at the proxy, so no server could check it.
/// </summary>
internal static class ScramAuthenticator
{
    /// <summary>AuthenticationSASL offering SCRAM-SHA-256 only.</summary>
    public static byte[] Request() => Authentication(10, [.. Encoding.UTF8.GetBytes(ScramLogin.Mechanism), 0, 0]);

    /// <summary>
    /// Runs the exchange: the capture when the client proved the password, else null with the
    /// error for the client (<paramref name="role"/>'s as PostgreSQL words it).
    /// </summary>
    public static async Task<(ScramCapture? Proven, byte[]? Error)> RunAsync(
        string role,
        ScramVerifier verifier,
        MessageReader client,
        Func<byte[], ValueTask> send,
        CancellationToken cancellationToken)
    {
        await send(Request());
        if (await client.ReadAsync(cancellationToken) is not { Type: (byte)'p' } initial)
        {
            return (null, null);
        }

        var at = 0;
        var mechanism = MessageWriter.ReadCString(initial.Body, ref at);
        if (mechanism != ScramLogin.Mechanism || at + 4 > initial.Body.Length)
        {
            return (null, PostgresWire.FatalError(PostgresWire.ProtocolViolation, "client selected an invalid SASL authentication mechanism"));
        }

        var length = BinaryPrimitives.ReadInt32BigEndian(initial.Body.AsSpan(at));
        var clientFirst = Encoding.UTF8.GetString(initial.Body, at + 4, Math.Max(0, Math.Min(length, initial.Body.Length - at - 4)));

        // gs2 header: "n,," or "y,," (the client can bind channels, and sees that the proxy does not).
        var headerEnd = clientFirst.StartsWith("n,", StringComparison.Ordinal) || clientFirst.StartsWith("y,", StringComparison.Ordinal)
            ? clientFirst.IndexOf(',', 2)
            : -1;
        var clientNonce = headerEnd < 0 ? null : ScramCapture.Attributes(clientFirst[(headerEnd + 1)..]).GetValueOrDefault('r');
        if (headerEnd < 0 || string.IsNullOrEmpty(clientNonce))
        {
            return (null, PostgresWire.FatalError(PostgresWire.ProtocolViolation, "malformed SCRAM message (the proxy offers SCRAM-SHA-256 without channel binding)"));
        }

        var serverNonce = clientNonce + Convert.ToBase64String(RandomNumberGenerator.GetBytes(18));
        var serverFirst = $"r={serverNonce},s={verifier.Salt},i={verifier.Iterations.ToString(CultureInfo.InvariantCulture)}";
        await send(Authentication(11, Encoding.UTF8.GetBytes(serverFirst)));
        if (await client.ReadAsync(cancellationToken) is not { Type: (byte)'p' } response)
        {
            return (null, null);
        }

        var clientFinal = Encoding.UTF8.GetString(response.Body);
        var proven = new ScramCapture();
        proven.OnClientFirst(clientFirst);
        proven.OnServerFirst(serverFirst);
        proven.OnClientFinal(clientFinal);
        var attributes = ScramCapture.Attributes(clientFinal);
        var binding = Convert.ToBase64String(Encoding.UTF8.GetBytes(clientFirst[..(headerEnd + 1)]));
        if (attributes.GetValueOrDefault('r') != serverNonce || attributes.GetValueOrDefault('c') != binding)
        {
            return (null, PostgresWire.FatalError(PostgresWire.ProtocolViolation, "malformed SCRAM message (nonce or channel binding mismatch)"));
        }

        proven.OnAuthenticated();
        if (proven.ClientKey(verifier) is null)
        {
            // Exactly PostgreSQL's words and code, so that clients and operators see nothing new.
            return (null, PostgresWire.FatalError(PostgresWire.InvalidPassword, $"password authentication failed for user \"{role}\""));
        }

        await send(Authentication(12, Encoding.UTF8.GetBytes("v=" + proven.ServerSignature(verifier))));
        return (proven, null);
    }

    /// <summary>AuthenticationOk, sent once the server accepted the login made on the client's behalf.</summary>
    public static byte[] Ok() => Authentication(0, []);

    private static byte[] Authentication(int code, byte[] data)
    {
        var message = new byte[1 + 4 + 4 + data.Length];
        message[0] = (byte)'R';
        BinaryPrimitives.WriteInt32BigEndian(message.AsSpan(1), 8 + data.Length);
        BinaryPrimitives.WriteInt32BigEndian(message.AsSpan(5), code);
        data.CopyTo(message, 9);
        return message;
    }
}
