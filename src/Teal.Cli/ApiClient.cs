using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json;
using Teal.Server.Api;
using Teal.Server.Json;

namespace Teal.Cli;

/// <summary>
/// The CLI's one way to the REST API. Problem answers become <see cref="CliException"/>s with
/// the server's message and hint; a server that cannot be reached says so in one line.
/// </summary>
internal sealed class ApiClient : IDisposable
{
    private readonly HttpClient _http;

    public ApiClient(Uri server, string? token)
    {
        Server = server;
        // No overall timeout: creating a green or verifying takes as long as it takes; a dead
        // server is caught by the connect timeout.
        _http = new HttpClient(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(5) }) { BaseAddress = server, Timeout = Timeout.InfiniteTimeSpan };
        if (token is not null)
        {
            _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
    }

    public Uri Server { get; }

    public async Task<T> GetAsync<T>(string path, CancellationToken cancellationToken) =>
        Parse<T>(await SendAsync(HttpMethod.Get, path, null, cancellationToken));

    public async Task<T> PostAsync<T>(string path, object? body, CancellationToken cancellationToken) =>
        Parse<T>(await SendAsync(HttpMethod.Post, path, body, cancellationToken));

    /// <summary>Sends a request and returns the response body (empty for 204).</summary>
    public async Task<string> SendAsync(HttpMethod method, string path, object? body, CancellationToken cancellationToken)
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is not null)
        {
            request.Content = JsonContent.Create(body, body.GetType(), options: TealJson.Options);
        }

        HttpResponseMessage response;
        try
        {
            response = await _http.SendAsync(request, cancellationToken);
        }
        catch (HttpRequestException ex) when (ex.InnerException is SocketException || ex.HttpRequestError == HttpRequestError.ConnectionError)
        {
            throw new CliException($"cannot reach Teal at {Server}", "start it with teal serve (or point --server / TEAL_SERVER at it)");
        }
        catch (TaskCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new CliException($"cannot reach Teal at {Server}: no answer to the connection", "start it with teal serve (or point --server / TEAL_SERVER at it)");
        }

        using (response)
        {
            var text = await response.Content.ReadAsStringAsync(cancellationToken);
            if (response.IsSuccessStatusCode)
            {
                return text;
            }

            throw ToException(response.StatusCode, text);
        }
    }

    public void Dispose() => _http.Dispose();

    public static T Parse<T>(string json) =>
        JsonSerializer.Deserialize<T>(json, TealJson.Options) ?? throw new CliException("Teal answered with an empty body", null, ExitCodes.Bug);

    private static CliException ToException(HttpStatusCode status, string body)
    {
        ApiProblem? problem = null;
        try
        {
            problem = JsonSerializer.Deserialize<ApiProblem>(body, TealJson.Options);
        }
        catch (JsonException)
        {
            // Not a problem document (a proxy in between, an old server): reported by status below.
        }

        // A 500 is a bug in Teal (the server logged it); 503 is a database or service being away.
        var exitCode = (int)status >= 500 && status != HttpStatusCode.ServiceUnavailable ? ExitCodes.Bug : ExitCodes.Refused;
        return problem?.Detail is { } detail
            ? new CliException(detail, problem.Hint, exitCode)
            : new CliException($"Teal answered {(int)status} {status}", null, exitCode);
    }
}
