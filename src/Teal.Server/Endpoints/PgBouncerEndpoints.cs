using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Teal.Core.Endpoints;
using Teal.Core.Secrets;
using Teal.Postgres.PgBouncer;

namespace Teal.Server.Endpoints;

/// <summary>
/// The PgBouncers Teal drives, one long-lived driver per declared endpoint (it remembers whether
/// it paused its database). Built on first use from the declaration; the route is the
/// declared instance's current address, which after a switchover is green's.
/// </summary>
public sealed class PgBouncerEndpoints(StateTargetResolver targets, ISecretStore secrets, ILoggerFactory loggers, TimeProvider time) : IAsyncDisposable
{
    private readonly ConcurrentDictionary<string, PgBouncerEndpoint> _drivers = new(StringComparer.Ordinal);

    /// <summary>The driver of a declared PgBouncer endpoint, built on first use.</summary>
    public async Task<IEndpoint> DriverAsync(EndpointSpec spec, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        if (!_drivers.TryGetValue(spec.Name, out var driver))
        {
            // The ini entry's dbname is the instance's database (the switchover keeps it).
            var target = await targets.ResolveAsync(spec.Instance, cancellationToken);
            driver = _drivers.GetOrAdd(spec.Name, _ => PgBouncerEndpoint.Create(spec, target, secrets, loggers.CreateLogger<PgBouncerEndpoint>(), time));
        }

        return driver;
    }

    /// <summary>Forgets the driver of a removed endpoint.</summary>
    public async Task ForgetAsync(string name)
    {
        if (_drivers.TryRemove(name, out var driver))
        {
            await driver.DisposeAsync();
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var name in _drivers.Keys)
        {
            await ForgetAsync(name);
        }
    }
}
