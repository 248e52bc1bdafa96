using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Routing;
using Teal.Core.Engines;

namespace Teal.Server.Api;

/// <summary><c>/api/engines</c>: the engine versions this machine can run for managed instances.</summary>
public static class EngineRoutes
{
    public static void Map(IEndpointRouteBuilder api)
    {
        api.MapGet("/engines", async (EngineRegistry engines, CancellationToken ct) =>
        {
            var all = new List<EngineBinaries>();
            foreach (var provisioner in engines.Provisioners)
            {
                all.AddRange(await provisioner.ListEnginesAsync(ct));
            }

            return all;
        });
    }
}
