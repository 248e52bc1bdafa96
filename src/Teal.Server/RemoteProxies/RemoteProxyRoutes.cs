using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Teal.Core.Errors;
using Teal.Proxy.Sessions;
using Teal.Server.Api;

namespace Teal.Server.RemoteProxies;

/// <summary>
/// <c>/api/proxies</c>: what <c>teal proxy</c> processes call (heartbeat, route table, SCRAM
/// verifiers) and what operators read. Every route needs the server's token: the route table
/// names every server behind the endpoints, and a verifier is password-equivalent for a login.
/// </summary>
public static class RemoteProxyRoutes
{
    public static void Map(IEndpointRouteBuilder api)
    {
        var group = api.MapGroup("/proxies");
        group.MapGet("/", (RemoteProxyRegistry registry) =>
            registry.All.Select(p => new RemoteProxyView(p.Name, p.AdminUrl, p.LastSeen, p.Draining, p.Endpoints)).ToList());

        // A heartbeat registers the proxy (or keeps it registered) and answers with the routes.
        group.MapPost("/heartbeat", async (ProxyHeartbeat heartbeat, RemoteProxyRegistry registry, ProxyRouteTableSource routes, CancellationToken ct) =>
        {
            Validate(heartbeat);
            await registry.HeartbeatAsync(heartbeat, ct);
            return await routes.ReadAsync(ct);
        });
        group.MapGet("/routes", (ProxyRouteTableSource routes, CancellationToken ct) => routes.ReadAsync(ct)).WithMetadata(new TokenRequired());

        // The proxy's auth query, run here with Teal's control login; the verifier goes back over
        // this authenticated call only, and the proxy keeps it in memory for the login.
        group.MapPost("/verifier", async (ProxyVerifierRequest request, IScramVerifierSource verifiers, CancellationToken ct) =>
            new ProxyVerifierResponse(await verifiers.ReadAsync(request.Target, request.Role, ct)));

        group.MapDelete("/{name}", async (string name, RemoteProxyRegistry registry, CancellationToken ct) =>
            await registry.RemoveAsync(name, ct)
                ? Results.NoContent()
                : throw new TealException("proxy.not-found", $"no teal proxy named '{name}' is registered", "see GET /api/proxies") { Kind = TealErrorKind.NotFound });
    }

    private static void Validate(ProxyHeartbeat heartbeat)
    {
        if (string.IsNullOrWhiteSpace(heartbeat.Name) || heartbeat.Name.Length > 100 || heartbeat.AdminUrl is not { IsAbsoluteUri: true } url || (url.Scheme != Uri.UriSchemeHttp && url.Scheme != Uri.UriSchemeHttps))
        {
            throw new TealException("proxy.heartbeat-invalid", "a proxy heartbeat needs a name and an absolute http(s) admin URL", "run `teal proxy --name NAME --admin-listen HOST:PORT`");
        }
    }
}

/// <summary>Drops proxies that stopped heartbeating, every few seconds, while <c>teal serve</c> runs.</summary>
public sealed class RemoteProxyWatch(RemoteProxyRegistry registry, TimeProvider time) : Microsoft.Extensions.Hosting.BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(5), time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                await registry.DropSilentAsync(stoppingToken);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Teal is stopping.
        }
    }
}
