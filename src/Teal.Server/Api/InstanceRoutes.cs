using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.Routing;
using Teal.Core.Instances;

namespace Teal.Server.Api;

/// <summary><c>/api/instances</c>: register, create, list, get a connection URI, remove.</summary>
public static class InstanceRoutes
{
    public static void Map(IEndpointRouteBuilder api)
    {
        var group = api.MapGroup("/instances");
        group.MapGet("/", async (InstanceService instances, CancellationToken ct) => (await instances.ListAsync(ct)).Select(InstanceView.From).ToList());
        group.MapGet("/{name}", async (string name, InstanceService instances, CancellationToken ct) => InstanceView.From(await instances.GetAsync(name, ct)));
        group.MapPost("/", async (AddInstanceRequest request, InstanceService instances, CancellationToken ct) =>
        {
            var added = InstanceView.From(await instances.AddAsync(request, ct));
            return Results.Created($"/api/instances/{added.Name}", added);
        });
        // Read-only, but it hands out a password: the token is required as for a change.
        group.MapGet("/{name}/url", (string name, [FromQuery] bool? endpoint, [FromQuery(Name = "as")] string? asUser, InstanceService instances, CancellationToken ct) =>
                instances.UrlAsync(name, endpoint ?? false, ct, asTeal: asUser == "teal"))
            .WithMetadata(new TokenRequired());
        group.MapPost("/{name}/unfence", async (string name, InstanceService instances, CancellationToken ct) =>
            Results.Ok(new InstanceUnfenced(name, await instances.UnfenceAsync(name, ct))));
        // The new password is never returned: only the deployments whose replication followed it.
        group.MapPost("/{name}/rotate-password", async (string name, Teal.Core.Deployments.ControlPasswordRotation rotation, CancellationToken ct) =>
            Results.Ok(new ControlPasswordRotated(name, await rotation.RotateAsync(name, ct))));
        group.MapDelete("/{name}", async (string name, [FromQuery(Name = "delete-data")] bool? deleteData, InstanceService instances, CancellationToken ct) =>
        {
            await instances.RemoveAsync(name, deleteData ?? false, ct);
            return Results.NoContent();
        });
    }
}

/// <summary>Answer of <c>POST /api/instances/{name}/rotate-password</c>: the deployments whose subscriptions now log in with the new password.</summary>
public sealed record ControlPasswordRotated(string Name, IReadOnlyList<string> Deployments);

/// <summary>Answer of <c>POST /api/instances/{name}/unfence</c>: the roles given LOGIN back.</summary>
public sealed record InstanceUnfenced(string Name, IReadOnlyList<string> Roles);
