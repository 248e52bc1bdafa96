using Microsoft.AspNetCore.Http;
using Teal.Server.Hosting;
using Teal.Server.State;

namespace Teal.Server.Api;

/// <summary>Marks a route that changes nothing although its method is POST (a standby serves it).</summary>
public sealed record ReadsOnly;

/// <summary>
/// On a standby control plane (shared state store, another machine leads), refuses every call
/// that would change something before it starts, with 503 and the leader's address: a create
/// must not provision a green on a machine whose write would then be refused. Reads are served.
/// </summary>
public sealed class StandbyCheck(RequestDelegate next, Leadership leadership)
{
    public async Task InvokeAsync(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var mutating = !(HttpMethods.IsGet(context.Request.Method) || HttpMethods.IsHead(context.Request.Method) || HttpMethods.IsOptions(context.Request.Method));
        if (mutating && !leadership.IsLeader && context.GetEndpoint()?.Metadata.GetMetadata<ReadsOnly>() is null)
        {
            await ApiErrors.WriteAsync(context, ApiErrors.Problem(WriteFence.NotLeader(leadership.LeaderUrl)));
            return;
        }

        await next(context);
    }
}
