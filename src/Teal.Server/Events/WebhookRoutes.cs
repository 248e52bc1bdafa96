using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Teal.Server.Events;

/// <summary><c>/api/webhooks</c>: add, list and remove webhook sinks. Secrets go in, never out.</summary>
public static class WebhookRoutes
{
    public static void Map(IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/api/webhooks");
        group.MapGet("/", (WebhookDispatcher dispatcher) => dispatcher.List());
        group.MapPost("/", (AddWebhookRequest request, WebhookStore store) =>
        {
            var webhook = store.Add(request);
            return Results.Created($"/api/webhooks/{webhook.Id}", new WebhookView(webhook.Id, webhook.Url, webhook.CreatedAt, webhook.SecretRef is not null));
        });
        group.MapDelete("/{id}", (string id, WebhookStore store) =>
        {
            store.Remove(id);
            return Results.NoContent();
        });
    }
}
