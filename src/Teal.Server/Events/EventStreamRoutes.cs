using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.Routing;
using Teal.Core.Deployments;
using Teal.Core.State;
using Teal.Server.Json;
using Teal.Server.State;

namespace Teal.Server.Events;

/// <summary>
/// <c>GET /api/events/stream</c>: the event log as server-sent events (<c>text/event-stream</c>),
/// for one deployment or all. Each event's <c>id</c> is its sequence number, so a browser's
/// <c>EventSource</c> resumes after a dropped connection (<c>Last-Event-ID</c>) without a gap.
/// Without <c>after</c>, the stream starts with the latest <c>backlog</c> events.
/// </summary>
public static class EventStreamRoutes
{
    private static readonly TimeSpan KeepAlive = TimeSpan.FromSeconds(15);

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/api/events/stream", async (
            HttpContext http,
            [FromQuery] string? deployment,
            [FromQuery] long? after,
            [FromQuery] int? backlog,
            IStateStore state,
            DeploymentService deployments,
            EventSignal signal,
            CancellationToken ct) =>
        {
            DeploymentId? id = deployment is null ? null
                : DeploymentId.TryParse(deployment, out var parsed) ? parsed
                : (await deployments.GetAsync(deployment, ct)).Id;
            var from = long.TryParse(http.Request.Headers["Last-Event-ID"], NumberStyles.None, CultureInfo.InvariantCulture, out var resumed) ? resumed
                : after ?? await BacklogStartAsync(state, id, Math.Clamp(backlog ?? 50, 0, 1000), ct);

            http.Response.ContentType = "text/event-stream";
            http.Response.Headers.CacheControl = "no-cache";
            // Proxies in front of Teal (nginx) must pass each event on at once.
            http.Response.Headers["X-Accel-Buffering"] = "no";
            await http.Response.WriteAsync(": teal event stream\n\n", ct);
            await http.Response.Body.FlushAsync(ct);
            try
            {
                while (!ct.IsCancellationRequested)
                {
                    var next = signal.Next;
                    var events = await state.ListEventsAsync(id, from, 500, ct);
                    foreach (var e in events)
                    {
                        var data = JsonSerializer.Serialize(e, TealJson.Options);
                        // No `event:` field: the kind is in the data, and unnamed events reach a
                        // browser's EventSource.onmessage whatever their kind, new kinds included.
                        await http.Response.WriteAsync($"id: {e.Seq.ToString(CultureInfo.InvariantCulture)}\ndata: {data}\n\n", ct);
                        from = e.Seq;
                    }

                    await http.Response.Body.FlushAsync(ct);
                    if (events.Count == 500)
                    {
                        continue;
                    }

                    if (await Task.WhenAny(next, Task.Delay(KeepAlive, ct)) != next)
                    {
                        await http.Response.WriteAsync(": keep-alive\n\n", ct);
                    }
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                // The client went away: the normal end of a stream.
            }
            catch (IOException)
            {
                // The connection dropped while writing: the same.
            }

        });
    }

    /// <summary>The sequence number after which the last <paramref name="count"/> events start.</summary>
    private static async Task<long> BacklogStartAsync(IStateStore state, DeploymentId? id, int count, CancellationToken ct)
    {
        const int Page = 5000;
        long cursor = 0;
        var last = new Queue<long>();
        while (true)
        {
            var page = await state.ListEventsAsync(id, cursor, Page, ct);
            foreach (var e in page)
            {
                last.Enqueue(e.Seq);
                if (last.Count > count)
                {
                    last.Dequeue();
                }
            }

            if (page.Count > 0)
            {
                cursor = page[^1].Seq;
            }

            if (page.Count < Page)
            {
                return last.Count == 0 ? cursor : last.Peek() - 1;
            }
        }
    }
}
