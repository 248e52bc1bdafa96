using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Teal.Server.Api;

/// <summary>
/// The API reads JSON only. A body of another media type is answered 415 with a problem that
/// says so, before routing: otherwise no route accepts it and the caller is told the route does
/// not exist (404), which sends them looking in the wrong place.
/// </summary>
public sealed class JsonBodyCheck(RequestDelegate next)
{
    public Task InvokeAsync(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var hasBody = context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody ?? false;
        if (!context.Request.Path.StartsWithSegments("/api", StringComparison.Ordinal) || IsJson(context.Request.ContentType))
        {
            return next(context);
        }

        if (!hasBody)
        {
            // No body and no type: routed as an empty JSON request, so a call that needs a body
            // is told it has none (routing would otherwise match no route and answer 404).
            if (string.IsNullOrEmpty(context.Request.ContentType) && (HttpMethods.IsPost(context.Request.Method) || HttpMethods.IsPut(context.Request.Method) || HttpMethods.IsPatch(context.Request.Method)))
            {
                context.Request.ContentType = "application/json";
            }

            return next(context);
        }

        var sent = string.IsNullOrEmpty(context.Request.ContentType) ? "a body without a Content-Type" : $"'{context.Request.ContentType}'";
        return ApiErrors.WriteAsync(
            context,
            new ApiProblem("about:blank", "Unsupported Media Type", StatusCodes.Status415UnsupportedMediaType, $"the request body must be JSON (Content-Type: application/json), not {sent}", "request.unsupported-media-type")
            {
                Hint = "send the body as JSON with Content-Type: application/json (see the OpenAPI document at /openapi/v1.json)",
            });
    }

    /// <summary><c>application/json</c> or any <c>+json</c> type, with or without parameters (charset).</summary>
    private static bool IsJson(string? contentType)
    {
        if (string.IsNullOrEmpty(contentType))
        {
            return false;
        }

        var mediaType = contentType.Split(';', 2)[0].Trim();
        return mediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase) || mediaType.EndsWith("+json", StringComparison.OrdinalIgnoreCase);
    }
}
