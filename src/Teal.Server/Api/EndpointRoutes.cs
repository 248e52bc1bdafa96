using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Teal.Core.Endpoints;
using Teal.Server.Endpoints;

namespace Teal.Server.Api;

/// <summary><c>/api/endpoints</c>: declare, list (with live figures when a proxy serves them), remove.</summary>
public static class EndpointRoutes
{
    public static void Map(IEndpointRouteBuilder api)
    {
        var group = api.MapGroup("/endpoints");
        group.MapGet("/", async (EndpointService endpoints, CancellationToken ct) => (await endpoints.ListAsync(ct)).Select(EndpointView.From).ToList());
        group.MapPost("/", async (AddEndpointRequest request, EndpointService endpoints, CancellationToken ct) =>
        {
            var added = EndpointView.From(await endpoints.AddAsync(request, ct));
            return Results.Created($"/api/endpoints/{added.Name}", added);
        });
        group.MapPost("/{name}/canary", (string name, CanaryRequest request, EndpointCanary canary, CancellationToken ct) => canary.SetAsync(name, request, ct));
        group.MapDelete("/{name}", async (string name, EndpointService endpoints, CancellationToken ct) =>
        {
            await endpoints.RemoveAsync(name, ct);
            return Results.NoContent();
        });
    }
}
