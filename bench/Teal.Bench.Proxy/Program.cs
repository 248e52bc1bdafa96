using System.Globalization;
using Microsoft.Extensions.Logging;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;
using Teal.Proxy.Hosting;

// Usage: Teal.Bench.Proxy --listen 127.0.0.1:6432 --target 127.0.0.1:5432 [--database postgres]
//   [--tls-cert FILE --tls-key FILE] [--server-tls disable|prefer|require]
// Serves until SIGTERM (run.sh's exit trap sends it), then prints the endpoint's figures as JSON on stdout.
ProxyRuntime.ConfigureProcess();

string? OptionalValue(string name)
{
    var at = Array.IndexOf(args, name);
    return at >= 0 && at + 1 < args.Length ? args[at + 1] : null;
}

string Option(string name, string? fallback = null) => OptionalValue(name) ?? fallback ?? throw new ArgumentException($"missing {name}");

var listen = Option("--listen");
var target = Option("--target");
var colon = target.LastIndexOf(':');
var endpointTarget = new EndpointTarget("bench", target[..colon], int.Parse(target[(colon + 1)..], CultureInfo.InvariantCulture), Option("--database", "postgres"));

using var loggerFactory = LoggerFactory.Create(logging => logging.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning));
await using var manager = new ProxyManager(new ProxyOptions(), loggerFactory, TimeProvider.System);
var endpoint = await manager.StartAsync(new EndpointSpec("bench", EndpointKind.Proxy, "bench")
{
    Listen = listen,
    TlsCertificateFile = OptionalValue("--tls-cert"),
    TlsKeyFile = OptionalValue("--tls-key"),
    ServerTls = Enum.Parse<ServerTlsMode>(Option("--server-tls", "prefer").Replace("-", string.Empty, StringComparison.Ordinal), ignoreCase: true),
}, endpointTarget, CancellationToken.None);
Console.Error.WriteLine($"teal proxy listening on {endpoint.LocalEndPoint} -> {endpointTarget}");

var stop = new TaskCompletionSource();
using var sigterm = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, context =>
{
    context.Cancel = true;
    stop.TrySetResult();
});

await stop.Task;
var stats = endpoint.Stats;

// Allocations over the whole run, to check the forwarding path allocates nothing per read:
// divided by the transactions pgbench pushed through, they must stay at the per-connection cost.
var allocated = GC.GetTotalAllocatedBytes(precise: true);
Console.WriteLine($"{{\"total\":{stats.Total},\"errors\":{stats.Errors},\"bytes_from_clients\":{stats.BytesFromClients},\"bytes_to_clients\":{stats.BytesToClients},\"allocated_bytes\":{allocated},\"gen0_collections\":{GC.CollectionCount(0)}}}");
