using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Proxy.Endpoints;
using Teal.Proxy.Sessions;
using Teal.Proxy.Tls;

namespace Teal.Proxy.Hosting;

/// <summary>Finds where an instance is reached (host, port, database), by name.</summary>
public interface IEndpointTargetResolver
{
    Task<EndpointTarget> ResolveAsync(string instance, CancellationToken cancellationToken);
}

/// <summary>
/// The proxy endpoints of one <c>teal serve</c>: starts and stops them from their specs, and
/// finds one by name (the server's endpoint registry finds them from their declarations).
/// </summary>
public sealed class ProxyManager(ProxyOptions options, ILoggerFactory loggerFactory, TimeProvider timeProvider, IEndpointTargetResolver? resolver = null, IScramVerifierSource? verifiers = null)
    : IAsyncDisposable
{
    private readonly ConcurrentDictionary<string, ProxyEndpoint> _endpoints = new(StringComparer.Ordinal);
    private readonly ILogger _logger = loggerFactory.CreateLogger<ProxyEndpoint>();

    public IReadOnlyCollection<ProxyEndpoint> All => [.. _endpoints.Values];

    public ProxyEndpoint? Get(string name) => _endpoints.GetValueOrDefault(name);

    /// <summary>
    /// Starts listening for <paramref name="spec"/>, routing to <paramref name="target"/>. A reader
    /// spec with a canary has its canary instance resolved through the resolver. With
    /// <paramref name="holdDeadline"/> it starts paused (see <see cref="ProxyEndpoint.Start"/>).
    /// <paramref name="protocol"/> follows the engine of the instance it routes to.
    /// </summary>
    public async Task<ProxyEndpoint> StartAsync(EndpointSpec spec, EndpointTarget target, CancellationToken cancellationToken, TimeSpan? holdDeadline = null, ProxyProtocol protocol = ProxyProtocol.Postgres)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (spec.Kind != EndpointKind.Proxy)
        {
            throw new TealException("endpoint.not-proxy", $"Endpoint {spec.Name} is a {spec.Kind} endpoint, not one Teal's proxy serves");
        }

        EndpointTarget? canary = null;
        if (spec.CanaryInstance is not null && spec.CanaryPercent > 0)
        {
            canary = resolver is null
                ? throw new TealException("endpoint.canary-unresolved", $"Endpoint {spec.Name} has a canary but the proxy cannot resolve instance {spec.CanaryInstance}")
                : await resolver.ResolveAsync(spec.CanaryInstance, cancellationToken);
        }

        if (_endpoints.ContainsKey(spec.Name))
        {
            throw new TealException("endpoint.duplicate", $"Endpoint {spec.Name} is already being served") { Kind = TealErrorKind.Conflict };
        }

        var endpointOptions = options with
        {
            MaxConnections = spec.MaxConnections,
            RequireTls = spec.RequireTls,
            ServerTls = spec.ServerTls,
            ServerTlsRoots = spec.ServerTlsRootFile is { } roots ? LoadRoots(spec.Name, roots) : null,
            Certificate = spec.TlsCertificateFile is { } certificate
                ? ProxyCertificate.FromPemFiles(certificate, spec.TlsKeyFile ?? throw new TealException("endpoint.tls-key-missing", $"Endpoint {spec.Name} names a TLS certificate but no key", "Give the key file too."))
                : options.Certificate,
        };
        var endpoint = ProxyEndpoint.Start(spec.Name, ProxyEndpoint.ParseListen(spec.Name, spec.Listen), target, endpointOptions, _logger, timeProvider, holdDeadline, verifiers, protocol);
        endpoint.Role = spec.Role;
        endpoint.DeclaredInstance = spec.Instance;
        if (canary is not null)
        {
            await endpoint.SetCanaryAsync(canary, spec.CanaryPercent, cancellationToken);
        }

        if (!_endpoints.TryAdd(spec.Name, endpoint))
        {
            await endpoint.StopAsync();
            throw new TealException("endpoint.duplicate", $"Endpoint {spec.Name} is already being served") { Kind = TealErrorKind.Conflict };
        }

        return endpoint;
    }

    /// <summary>The root certificates in a PEM file, for an endpoint whose servers are verify-full.</summary>
    private static System.Security.Cryptography.X509Certificates.X509Certificate2Collection LoadRoots(string endpoint, string file)
    {
        var roots = new System.Security.Cryptography.X509Certificates.X509Certificate2Collection();
        try
        {
            roots.ImportFromPemFile(file);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
        {
            throw new TealException("endpoint.server-tls-roots", $"Endpoint {endpoint}: the root certificates in {file} cannot be read: {ex.Message}", "Give a readable PEM file of the CA that signed the servers' certificates (--server-tls-root).");
        }

        return roots.Count > 0
            ? roots
            : throw new TealException("endpoint.server-tls-roots", $"Endpoint {endpoint}: {file} holds no certificate", "Give a PEM file of the CA that signed the servers' certificates (--server-tls-root).");
    }

    /// <summary>Stops the endpoint named <paramref name="name"/>; false when there is none.</summary>
    public async Task<bool> StopAsync(string name)
    {
        if (!_endpoints.TryRemove(name, out var endpoint))
        {
            return false;
        }

        await endpoint.StopAsync();
        return true;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var name in _endpoints.Keys)
        {
            await StopAsync(name);
        }
    }
}
