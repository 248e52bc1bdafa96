using Microsoft.AspNetCore.Http;
using Teal.Server.Hosting;

namespace Teal.Server.Api;

/// <summary>Marks a read-only route that still needs the token (it returns a password).</summary>
public sealed record TokenRequired;

/// <summary>
/// Requires <c>Authorization: Bearer TOKEN</c> on every call that changes something (any method
/// but GET, HEAD and OPTIONS) and on routes marked <see cref="TokenRequired"/>.
/// </summary>
public sealed class TokenCheck(RequestDelegate next, ServerToken token)
{
    public async Task InvokeAsync(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var mutating = !(HttpMethods.IsGet(context.Request.Method) || HttpMethods.IsHead(context.Request.Method) || HttpMethods.IsOptions(context.Request.Method));
        if (mutating || context.GetEndpoint()?.Metadata.GetMetadata<TokenRequired>() is not null)
        {
            var header = context.Request.Headers.Authorization.ToString();
            var presented = header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header["Bearer ".Length..].Trim() : null;
            if (!token.Matches(presented))
            {
                context.Response.Headers.WWWAuthenticate = "Bearer";
                await ApiErrors.WriteAsync(
                    context,
                    new ApiProblem("about:blank", "Unauthorized", StatusCodes.Status401Unauthorized, presented is null ? "this call needs Teal's token" : "the token is not Teal's token", presented is null ? "auth.token-required" : "auth.token-invalid")
                    {
                        Hint = "pass --token or set TEAL_TOKEN; the token is in the server's data directory (DATA_DIR/token)",
                    });
                return;
            }
        }

        await next(context);
    }
}
