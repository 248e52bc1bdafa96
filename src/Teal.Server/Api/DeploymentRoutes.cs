using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.Routing;
using Teal.Core.Deployments;

namespace Teal.Server.Api;

/// <summary><c>/api/deployments</c>: create, list, show, verify, acknowledge or apply DDL, add skipped tables, delete.</summary>
public static class DeploymentRoutes
{
    public static void Map(IEndpointRouteBuilder api)
    {
        var group = api.MapGroup("/deployments");
        group.MapGet("/", (DeploymentService deployments, CancellationToken ct) => deployments.ListAsync(ct));
        group.MapGet("/{idOrName}", (string idOrName, DeploymentService deployments, CancellationToken ct) => deployments.GetAsync(idOrName, ct));
        group.MapPost("/", async (CreateDeploymentSpec spec, DeploymentService deployments, CancellationToken ct) =>
        {
            var created = await deployments.CreateAsync(spec, ct);
            return Results.Created($"/api/deployments/{created.Id}", created);
        });
        group.MapPost("/{idOrName}/verify", (string idOrName, DeploymentService deployments, CancellationToken ct) => deployments.VerifyAsync(idOrName, null, ct));
        group.MapPost("/{idOrName}/ack-ddl", (string idOrName, DeploymentService deployments, CancellationToken ct) => deployments.AcknowledgeDdlAsync(idOrName, ct));
        group.MapPost("/{idOrName}/apply-ddl", (string idOrName, DeploymentService deployments, CancellationToken ct) => deployments.ApplyDdlAsync(idOrName, ct));
        group.MapPost("/{idOrName}/add-tables", async (string idOrName, DeploymentService deployments, CancellationToken ct) =>
            new AddTablesResult(await deployments.AddMissingTablesAsync(idOrName, ct)));
        group.MapDelete("/{idOrName}", async (string idOrName, [FromQuery] bool? deleteTarget, DeploymentService deployments, CancellationToken ct) =>
        {
            await deployments.DeleteAsync(idOrName, deleteTarget ?? false, ct);
            return Results.NoContent();
        });
    }
}
