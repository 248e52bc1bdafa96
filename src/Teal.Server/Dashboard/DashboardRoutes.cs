using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Teal.Server.Dashboard;

/// <summary>
/// The dashboard at <c>/</c>: plain HTML, JavaScript and CSS embedded in this assembly (no build
/// step, nothing fetched from the internet), reading the same REST API and event stream as the
/// CLI. Actions send the token the operator types into the page.
/// </summary>
public static class DashboardRoutes
{
    private static readonly Dictionary<string, string> ContentTypes = new(StringComparer.Ordinal)
    {
        [".html"] = "text/html; charset=utf-8",
        [".js"] = "text/javascript; charset=utf-8",
        [".css"] = "text/css; charset=utf-8",
    };

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/", () => Asset("index.html"));
        app.MapGet("/dashboard/{file}", (string file) => Asset(file));
    }

    private static IResult Asset(string file)
    {
        var stream = typeof(DashboardRoutes).Assembly.GetManifestResourceStream("dashboard/" + file);
        if (stream is null || !ContentTypes.TryGetValue(Path.GetExtension(file), out var contentType))
        {
            stream?.Dispose();
            return Results.NotFound();
        }

        return Results.Stream(stream, contentType);
    }
}
