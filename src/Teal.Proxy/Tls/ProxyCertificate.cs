using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Teal.Core.Errors;
using Teal.Core.Secrets;

namespace Teal.Proxy.Tls;

/// <summary>
/// The certificate Teal's proxy shows clients that ask for TLS: one the operator gives (PEM
/// certificate and key), or one Teal generates at first start and keeps in its data directory
/// (key 0600), so that <c>sslmode=require</c> works out of the box and <c>verify-full</c> works
/// once clients trust it.
/// </summary>
public static class ProxyCertificate
{
    public const string CertificateFile = "proxy-tls.crt";

    public const string KeyFile = "proxy-tls.key";

    /// <summary>The data directory's certificate, generated on first use.</summary>
    public static X509Certificate2 LoadOrCreate(string directory)
    {
        var certificate = Path.Combine(directory, CertificateFile);
        var key = Path.Combine(directory, KeyFile);
        if (File.Exists(certificate) && File.Exists(key))
        {
            PrivateFile.Narrow(key);
            return FromPemFiles(certificate, key);
        }

        using var ecdsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=Teal endpoint", ecdsa, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        names.AddDnsName(Dns.GetHostName());
        names.AddIpAddress(IPAddress.Loopback);
        names.AddIpAddress(IPAddress.IPv6Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false)); // server authentication
        var now = DateTimeOffset.UtcNow;
        using var generated = request.CreateSelfSigned(now.AddMinutes(-5), now.AddYears(10));
        // The key first: a certificate file without its key would be taken as a pair next start.
        PrivateFile.WriteNew(key, ecdsa.ExportPkcs8PrivateKeyPem());
        File.WriteAllText(certificate, generated.ExportCertificatePem());
        return FromPemFiles(certificate, key);
    }

    /// <summary>A PEM certificate (chain) and its PEM key, as an endpoint's settings name them.</summary>
    public static X509Certificate2 FromPemFiles(string certificate, string key)
    {
        try
        {
            using var pem = X509Certificate2.CreateFromPemFile(certificate, key);
            // Exported and loaded again: SslStream on Linux wants a key it can use outside the PEM import.
            return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException)
        {
            throw new TealException("endpoint.tls-certificate", $"cannot load the TLS certificate {certificate} with key {key}: {ex.Message}",
                "Give a PEM certificate and its PEM private key (PKCS#8, RSA or EC), readable by Teal.", ex);
        }
    }

    /// <summary>SHA-256 of the certificate, as <c>openssl x509 -fingerprint -sha256</c> prints it.</summary>
    public static string Fingerprint(X509Certificate2 certificate)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        return string.Join(':', certificate.GetCertHash(HashAlgorithmName.SHA256).Select(b => b.ToString("X2", System.Globalization.CultureInfo.InvariantCulture)));
    }
}
