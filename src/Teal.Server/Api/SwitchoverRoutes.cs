using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Teal.Core.Switchover;

namespace Teal.Server.Api;

/// <summary>Body of <c>POST …/check</c> and <c>POST …/switchover</c>; every field optional.</summary>
public sealed record SwitchoverRequest(int? SwitchoverTimeout, double? DrainBudget, double? LongTransactionThreshold, bool DryRun = false)
{
    /// <summary>Accept that the fence locks out every database on blue's server (it acts on logins).</summary>
    public bool FenceWholeServer { get; init; }
}

/// <summary>
/// <c>/api/deployments/{id}/check</c>, <c>/switchover</c>, <c>/switchover/resume</c>, <c>/switchback</c>
/// and <c>/finish</c>: guardrails, the plan, starting a switchover (or a switchback) and resuming a
/// stopped one, and ending reverse replication.
/// </summary>
public static class SwitchoverRoutes
{
    public static void Map(IEndpointRouteBuilder api)
    {
        var group = api.MapGroup("/deployments");
        group.MapPost("/{idOrName}/check", (string idOrName, SwitchoverRequest? request, SwitchoverService switchovers, CancellationToken ct) =>
            switchovers.CheckAsync(idOrName, Options(request), ct)).WithMetadata(new ReadsOnly());
        group.MapPost("/{idOrName}/switchover", async (string idOrName, SwitchoverRequest? request, SwitchoverService switchovers, CancellationToken ct) =>
        {
            var options = Options(request);
            return request?.DryRun == true
                ? Results.Ok(await switchovers.DryRunAsync(idOrName, options, ct))
                : Results.Accepted(value: await switchovers.StartAsync(idOrName, options, ct));
        });
        group.MapPost("/{idOrName}/switchover/resume", async (string idOrName, SwitchoverService switchovers, CancellationToken ct) =>
            Results.Accepted(value: await switchovers.ResumeAsync(idOrName, ct)));
        group.MapPost("/{idOrName}/switchback", async (string idOrName, SwitchoverRequest? request, SwitchoverService switchovers, CancellationToken ct) =>
        {
            var options = Options(request);
            return request?.DryRun == true
                ? Results.Ok(await switchovers.DryRunAsync(idOrName, options, ct, switchback: true))
                : Results.Accepted(value: await switchovers.StartAsync(idOrName, options, ct, switchback: true));
        });
        group.MapPost("/{idOrName}/finish", (string idOrName, SwitchoverService switchovers, CancellationToken ct) =>
            switchovers.FinishAsync(idOrName, ct));
    }

    private static SwitchoverOptions Options(SwitchoverRequest? request) =>
        SwitchoverOptions.Create(request?.SwitchoverTimeout, request?.DrainBudget, request?.LongTransactionThreshold) with { FenceWholeServer = request?.FenceWholeServer == true };
}
