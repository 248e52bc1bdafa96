using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.Routing;
using Teal.Core.Deployments;
using Teal.Core.Events;
using Teal.Core.State;
using Teal.Server.State;

namespace Teal.Server.Api;

/// <summary>
/// <c>/api/events</c>: events after a sequence number, for one deployment or all. With
/// <c>wait</c> seconds the call long-polls: it answers as soon as there is at least one event.
/// </summary>
public static class EventRoutes
{
    private const int MaxWaitSeconds = 60;

    public static void Map(IEndpointRouteBuilder api)
    {
        api.MapGet("/events", async (
            [FromQuery] string? deployment,
            [FromQuery] long? after,
            [FromQuery] int? limit,
            [FromQuery] int? wait,
            IStateStore state,
            DeploymentService deployments,
            EventSignal signal,
            CancellationToken ct) =>
        {
            // An id is taken as it is, so the events of a deleted deployment stay readable.
            DeploymentId? id = deployment is null ? null
                : DeploymentId.TryParse(deployment, out var parsed) ? parsed
                : (await deployments.GetAsync(deployment, ct)).Id;
            var take = Math.Clamp(limit ?? 500, 1, 5000);
            var deadline = DateTime.UtcNow.AddSeconds(Math.Clamp(wait ?? 0, 0, MaxWaitSeconds));
            while (true)
            {
                var next = signal.Next;
                IReadOnlyList<DeploymentEvent> events = await state.ListEventsAsync(id, after ?? 0, take, ct);
                var remaining = deadline - DateTime.UtcNow;
                if (events.Count > 0 || remaining <= TimeSpan.Zero)
                {
                    return events;
                }

                await Task.WhenAny(next, Task.Delay(remaining, ct));
                ct.ThrowIfCancellationRequested();
            }
        });
    }
}
