using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.Metadata;
using Microsoft.Extensions.Logging;
using Teal.Core.Errors;
using Teal.Server.Json;

namespace Teal.Server.Api;

/// <summary>
/// Turns exceptions into problem JSON: a <see cref="TealException"/> keeps its code, message and
/// hint with the status its kind maps to; anything else is a bug — logged with its stack, and
/// answered 500 with a generic message (an exception's text may hold things clients must not see).
/// </summary>
public sealed partial class ApiErrors(RequestDelegate next, ILogger<ApiErrors> logger)
{
    public async Task InvokeAsync(HttpContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        try
        {
            await next(context);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away; there is nobody to answer.
        }
        catch (TealException ex)
        {
            await WriteAsync(context, Problem(ex));
        }
        catch (BadHttpRequestException ex)
        {
            await WriteAsync(context, new ApiProblem("about:blank", "Bad request", ex.StatusCode, BadRequestDetail(context, ex), "request.invalid") { Hint = "see the OpenAPI document at /openapi/v1.json" });
        }
        catch (Exception ex)
        {
            LogUnhandled(ex, context.Request.Method, context.Request.Path);
            await WriteAsync(context, new ApiProblem("about:blank", "Internal error", StatusCodes.Status500InternalServerError, "Teal hit an internal error; its log has the details", "internal"));
        }
    }

    public static int StatusOf(TealErrorKind kind) => kind switch
    {
        TealErrorKind.NotFound => StatusCodes.Status404NotFound,
        TealErrorKind.Conflict => StatusCodes.Status409Conflict,
        TealErrorKind.Refused => StatusCodes.Status422UnprocessableEntity,
        TealErrorKind.Unavailable => StatusCodes.Status503ServiceUnavailable,
        _ => StatusCodes.Status400BadRequest,
    };

    public static ApiProblem Problem(TealException ex)
    {
        ArgumentNullException.ThrowIfNull(ex);
        var status = StatusOf(ex.Kind);
        return new ApiProblem("about:blank", ReasonPhrases(status), status, ex.Message, ex.Code) { Hint = ex.Hint, Checks = ex.Report?.Results };
    }

    public static async Task WriteAsync(HttpContext context, ApiProblem problem)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(problem);
        if (context.Response.HasStarted)
        {
            return;
        }

        context.Response.Clear();
        context.Response.StatusCode = problem.Status;
        context.Response.ContentType = "application/problem+json";
        await JsonSerializer.SerializeAsync(context.Response.Body, problem, TealJson.Options, context.RequestAborted);
    }

    /// <summary>
    /// What was wrong with the request, in the caller's terms: ASP.NET Core's own text names
    /// parameter types and suggests services, which means nothing to someone calling the API.
    /// </summary>
    private static string BadRequestDetail(HttpContext context, BadHttpRequestException ex)
    {
        var call = $"{context.Request.Method} {context.Request.Path}";
        if (ex.InnerException is JsonException json)
        {
            var reason = json.Message.Split(" Path:", 2)[0].TrimEnd('.');
            // The serializer names .NET types there, which mean nothing to the caller.
            reason = reason.StartsWith("The JSON value could not be converted to", StringComparison.Ordinal) ? "a value of the wrong type" : reason;
            var where = json.Path is null ? string.Empty : $" at {json.Path}";
            var line = json.LineNumber is { } n ? $" (line {n + 1}, byte {json.BytePositionInLine + 1})" : string.Empty;
            return $"the request body is not valid JSON for {call}{where}{line}: {reason}";
        }

        var expectsBody = context.GetEndpoint()?.Metadata.GetMetadata<IAcceptsMetadata>() is not null;
        var hasBody = context.Features.Get<IHttpRequestBodyDetectionFeature>()?.CanHaveBody ?? false;
        return (expectsBody, hasBody) switch
        {
            (true, false) => $"the request has no body; {call} takes a JSON object",
            // A body that parsed to nothing: the JSON literal null.
            (true, true) => $"the request body is not a JSON object; {call} takes one",
            _ => ex.Message,
        };
    }

    private static string ReasonPhrases(int status) => Microsoft.AspNetCore.WebUtilities.ReasonPhrases.GetReasonPhrase(status);

    [LoggerMessage(EventId = 2300, Level = LogLevel.Error, Message = "Unhandled error in {Method} {Path}")]
    private partial void LogUnhandled(Exception exception, string method, string path);
}
