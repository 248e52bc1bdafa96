using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Teal.Core.Endpoints;
using Teal.Postgres.Instances;
using Teal.Proxy.Endpoints;
using Teal.Server.ProxyHost;
using Teal.Server.RemoteProxies;
using Teal.Testing;

namespace Teal.Server.Tests.ProxyHost;

/// <summary>
/// The admin API of a <c>teal proxy</c> (in this process, serving its route file, with no
/// control plane answering): <c>logins-open</c> and <c>log-in-before-pause</c> refuse a target
/// that names no server (the latter also a socket that is not a Unix socket's path), and what
/// they take leaves the endpoint's route and pause as they were — only the resume moves them.
/// </summary>
public sealed class ProxyAdminApiTests
{
    private const string Token = "admin-api-test-token";
    private static readonly EndpointTarget Blue = new("app", "127.0.0.1", 5432, "app");

    /// <summary>An abstract socket's name as .NET (and Teal's fence) spells it.</summary>
    private const string Abstract = "\0teal/.s.PGSQL.5433";

    [Fact]
    public async Task LoginsOpen_BadInput_IsRefusedWith400_WithoutTokenWith401_UnknownEndpointWith404()
    {
        await using var proxy = await StartAsync();
        using var http = Client(proxy, Token);

        (await PostAsync(http, "app", "{}")).ShouldBe((HttpStatusCode.BadRequest, "proxy.request-invalid"));
        (await PostAsync(http, "app", string.Empty)).Status.ShouldBe(HttpStatusCode.BadRequest);
        (await PostAsync(http, "app", "{\"target\":")).Status.ShouldBe(HttpStatusCode.BadRequest);
        (await PostAsync(http, "app", Body(Blue with { Host = string.Empty }))).ShouldBe((HttpStatusCode.BadRequest, "proxy.request-invalid"));
        (await PostAsync(http, "app", Body(Blue with { Database = string.Empty }))).ShouldBe((HttpStatusCode.BadRequest, "proxy.request-invalid"));
        (await PostAsync(http, "app", Body(Blue with { Port = 0 }))).ShouldBe((HttpStatusCode.BadRequest, "proxy.request-invalid"));
        (await PostAsync(http, "app", Body(Blue with { Port = 70000 }))).ShouldBe((HttpStatusCode.BadRequest, "proxy.request-invalid"));
        (await PostAsync(http, "nosuch", Body(Blue with { Port = 5433 }))).Status.ShouldBe(HttpStatusCode.NotFound);
        using (var stranger = Client(proxy, "not-the-token"))
        {
            (await PostAsync(stranger, "app", Body(Blue with { Port = 5433 }))).Status.ShouldBe(HttpStatusCode.Unauthorized);
        }

        // Not paused: taken, and nothing changes.
        (await PostAsync(http, "app", Body(Blue with { Port = 5433 }))).Status.ShouldBe(HttpStatusCode.NoContent);
        var state = await http.GetFromJsonAsync<ProxyEndpointState>("/proxy/endpoints/app", Teal.Server.Json.TealJson.Options);
        state!.Target.ShouldBe(Blue);
        state.Paused.ShouldBeFalse();
    }

    [Fact]
    public async Task LoginsOpen_WhilePaused_LeavesRouteAndPause_ForTheResumeToDecide()
    {
        await using var proxy = await StartAsync();
        using var http = Client(proxy, Token);
        var green = Blue with { Instance = "app-green", Port = 5433 };

        (await http.PostAsync("/proxy/endpoints/app/drain", Json(new ProxyDrainRequest(1) { HoldSeconds = 30 }))).EnsureSuccessStatusCode();
        (await PostAsync(http, "app", Body(green))).Status.ShouldBe(HttpStatusCode.NoContent);

        var held = await http.GetFromJsonAsync<ProxyEndpointState>("/proxy/endpoints/app", Teal.Server.Json.TealJson.Options);
        held!.Paused.ShouldBeTrue();
        held.Target.ShouldBe(Blue, "logins-open only lets moving sessions log in early; the route moves with the resume");

        // A resume without a target (a rollback) resumes where the route was.
        (await http.PostAsync("/proxy/endpoints/app/resume", Json(new ProxyResumeRequest()))).EnsureSuccessStatusCode();
        var resumed = await http.GetFromJsonAsync<ProxyEndpointState>("/proxy/endpoints/app", Teal.Server.Json.TealJson.Options);
        resumed!.Paused.ShouldBeFalse();
        resumed.Target.ShouldBe(Blue);
    }

    [Fact]
    public async Task LogInBeforePauseAndPrepare_BadTargetOrSocket_IsRefusedWith400_NoSessionIsANoOp()
    {
        await using var proxy = await StartAsync();
        using var http = Client(proxy, Token);
        var green = Blue with { Instance = "app-green", Port = 5433 };

        (await PostAsync(http, "app", "{}", "log-in-before-pause")).ShouldBe((HttpStatusCode.BadRequest, "proxy.request-invalid"));
        (await PostAsync(http, "app", LoginBody(green with { Port = 0 }, Abstract), "log-in-before-pause")).ShouldBe((HttpStatusCode.BadRequest, "proxy.request-invalid"));
        (await PostAsync(http, "app", LoginBody(green, string.Empty), "log-in-before-pause")).ShouldBe((HttpStatusCode.BadRequest, "proxy.request-invalid"));
        (await PostAsync(http, "app", LoginBody(green, "relative/.s.PGSQL.5433"), "log-in-before-pause")).ShouldBe((HttpStatusCode.BadRequest, "proxy.request-invalid"));
        (await PostAsync(http, "app", LoginBody(green, "/" + new string('d', 120)), "log-in-before-pause")).ShouldBe((HttpStatusCode.BadRequest, "proxy.request-invalid"));
        (await PostAsync(http, "app", LoginBody(green, "@teal/.s.PGSQL.5433"), "log-in-before-pause")).ShouldBe((HttpStatusCode.BadRequest, "proxy.request-invalid"), "psql's spelling of an abstract name; .NET's starts with a NUL");
        (await PostAsync(http, "app", LoginBody(green, "/tmp\0/.s.PGSQL.5433"), "log-in-before-pause")).ShouldBe((HttpStatusCode.BadRequest, "proxy.request-invalid"));
        (await PostAsync(http, "nosuch", LoginBody(green, Abstract), "log-in-before-pause")).Status.ShouldBe(HttpStatusCode.NotFound);
        using (var stranger = Client(proxy, "not-the-token"))
        {
            (await PostAsync(stranger, "app", LoginBody(green, Abstract), "log-in-before-pause")).Status.ShouldBe(HttpStatusCode.Unauthorized);
        }

        // No session: nothing to log in (nor to read ahead), and route and pause are as they were.
        (await PostAsync(http, "app", LoginBody(green, Abstract), "log-in-before-pause")).Status.ShouldBe(HttpStatusCode.NoContent);
        (await http.PostAsync("/proxy/endpoints/app/prepare", Json(new ProxyHoldRequest(30)))).StatusCode.ShouldBe(HttpStatusCode.NoContent);
        (await http.PostAsync("/proxy/endpoints/nosuch/prepare", Json(new ProxyHoldRequest(30)))).StatusCode.ShouldBe(HttpStatusCode.NotFound);
        var state = await http.GetFromJsonAsync<ProxyEndpointState>("/proxy/endpoints/app", Teal.Server.Json.TealJson.Options);
        state!.Target.ShouldBe(Blue);
        state.Paused.ShouldBeFalse();
    }

    private static async Task<ProxyProcess> StartAsync()
    {
        var directory = TestDirectories.NewDirectory("proxy-admin");
        var routes = Path.Combine(directory, "p1.routes.json");
        var spec = new EndpointSpec("app", EndpointKind.Proxy, "app") { Listen = $"127.0.0.1:{ManagedPostgres.FreePort()}" };
        RouteFile.Save(routes, new ProxyRouteTable([new ProxyRouteEntry(spec, Blue, ProxyProtocol.Postgres, null, 0, Held: false)]));
        // No control plane listens there: the proxy serves its route file, and its heartbeats fail quietly.
        var nowhere = new Uri($"http://127.0.0.1:{ManagedPostgres.FreePort()}");
        return await ProxyProcess.StartAsync(new ProxyProcessOptions([nowhere], Token, "p1", "127.0.0.1:0", routes) { CertificateDirectory = Path.Combine(directory, "tls") }, CancellationToken.None);
    }

    private static HttpClient Client(ProxyProcess proxy, string token)
    {
        var http = new HttpClient { BaseAddress = proxy.AdminUrl };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        return http;
    }

    private static string Body(EndpointTarget target) => JsonSerializer.Serialize(new ProxyLoginsOpenRequest(target), Teal.Server.Json.TealJson.Options);

    private static string LoginBody(EndpointTarget target, string socket) => JsonSerializer.Serialize(new ProxyLogInBeforePauseRequest(target, socket), Teal.Server.Json.TealJson.Options);

    private static StringContent Json<T>(T body) => new(JsonSerializer.Serialize(body, Teal.Server.Json.TealJson.Options), Encoding.UTF8, "application/json");

    private static async Task<(HttpStatusCode Status, string? Code)> PostAsync(HttpClient http, string endpoint, string body, string action = "logins-open")
    {
        using var response = await http.PostAsync($"/proxy/endpoints/{endpoint}/{action}", new StringContent(body, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        string? code = null;
        if (response.Content.Headers.ContentType?.MediaType == "application/problem+json")
        {
            using var problem = JsonDocument.Parse(text);
            code = problem.RootElement.TryGetProperty("code", out var c) ? c.GetString() : null;
        }

        return (response.StatusCode, code);
    }
}
