using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Teal.Server.Api;
using Teal.Server.Json;
using Teal.Server.Tests.Support;

namespace Teal.Server.Tests.Api;

/// <summary>The API's contract that holds without any database: health, token, problem JSON, OpenAPI.</summary>
public sealed class ServerApiTests : IAsyncLifetime
{
    private TealHost _teal = null!; // Set in InitializeAsync, before any test runs.

    public async Task InitializeAsync() => _teal = await TealHost.StartAsync();

    public async Task DisposeAsync() => await _teal.DisposeAsync();

    [Fact]
    public async Task Healthz_AnswersOkWithVersion()
    {
        using var client = _teal.Client(withToken: false);

        var health = await client.GetFromJsonAsync<HealthView>("/healthz", TealJson.Options);

        health!.Status.ShouldBe("ok");
        health.Version.ShouldBe(TealServer.Version);
    }

    [Fact]
    public async Task Readyz_OnceTheEndpointsListen_AnswersOkAndHealthzSaysReady()
    {
        using var client = _teal.Client(withToken: false);

        // The endpoints start in the background once the API answers.
        var clock = System.Diagnostics.Stopwatch.StartNew();
        HttpResponseMessage ready;
        while ((ready = await client.GetAsync(new Uri("/readyz", UriKind.Relative))).StatusCode != HttpStatusCode.OK && clock.Elapsed < TimeSpan.FromSeconds(30))
        {
            ready.Dispose();
            await Task.Delay(50);
        }

        using (ready)
        {
            ready.StatusCode.ShouldBe(HttpStatusCode.OK);
            var view = await ready.Content.ReadFromJsonAsync<HealthView>(TealJson.Options);
            view!.Status.ShouldBe("ok");
            view.Ready.ShouldBe(true);
        }

        (await client.GetFromJsonAsync<HealthView>("/healthz", TealJson.Options))!.Ready.ShouldBe(true);
    }

    [Fact]
    public async Task Readyz_BeforeTheEndpointsListen_Answers503Starting_WhileHealthzStaysOk()
    {
        // A server whose start-up work never runs: its endpoints are never bound.
        await using var starting = await TealHost.StartAsync(configure: services =>
        {
            var work = services.Single(d => d.ServiceType == typeof(Microsoft.Extensions.Hosting.IHostedService) && d.ImplementationType == typeof(Teal.Server.Hosting.StartupWork));
            services.Remove(work);
        });
        using var client = starting.Client(withToken: false);

        using var ready = await client.GetAsync(new Uri("/readyz", UriKind.Relative));
        var health = await client.GetFromJsonAsync<HealthView>("/healthz", TealJson.Options);

        ready.StatusCode.ShouldBe(HttpStatusCode.ServiceUnavailable);
        var view = await ready.Content.ReadFromJsonAsync<HealthView>(TealJson.Options);
        view!.Status.ShouldBe("starting");
        view.Ready.ShouldBe(false);
        health!.Status.ShouldBe("ok");
        health.Ready.ShouldBe(false);
    }

    [Fact]
    public async Task Token_IsOwnerOnlyFile()
    {
        File.GetUnixFileMode(Path.Combine(_teal.DataDirectory, "token")).ShouldBe(UnixFileMode.UserRead | UnixFileMode.UserWrite);
        _teal.Token.Length.ShouldBe(64);
    }

    [Theory]
    [InlineData("POST", "/api/instances")]
    [InlineData("POST", "/api/deployments")]
    [InlineData("DELETE", "/api/deployments/orders")]
    [InlineData("POST", "/api/endpoints")]
    [InlineData("GET", "/api/instances/blue/url")]
    public async Task ProtectedCall_WithoutToken_Is401Problem(string method, string path)
    {
        using var client = _teal.Client(withToken: false);

        using var response = await client.SendAsync(new HttpRequestMessage(new HttpMethod(method), path) { Content = JsonContent.Create(new { name = "x" }) });

        response.StatusCode.ShouldBe(HttpStatusCode.Unauthorized);
        var problem = await ReadProblemAsync(response);
        problem.Code.ShouldBe("auth.token-required");
        problem.Hint.ShouldNotBeNull().ShouldContain("TEAL_TOKEN");
    }

    [Fact]
    public async Task MutatingCall_WithWrongToken_Is401()
    {
        using var client = _teal.Client(withToken: false);
        client.DefaultRequestHeaders.Authorization = new("Bearer", "not-the-token");

        using var response = await client.PostAsJsonAsync("/api/instances", new { name = "x" });

        response.StatusCode.ShouldBe(HttpStatusCode.Unauthorized);
        (await ReadProblemAsync(response)).Code.ShouldBe("auth.token-invalid");
    }

    [Fact]
    public async Task ReadCalls_NeedNoToken()
    {
        using var client = _teal.Client(withToken: false);

        (await client.GetAsync("/api/deployments")).StatusCode.ShouldBe(HttpStatusCode.OK);
        (await client.GetAsync("/api/instances")).StatusCode.ShouldBe(HttpStatusCode.OK);
        (await client.GetAsync("/api/endpoints")).StatusCode.ShouldBe(HttpStatusCode.OK);
        (await client.GetAsync("/api/events")).StatusCode.ShouldBe(HttpStatusCode.OK);
    }

    [Fact]
    public async Task UnknownDeployment_Is404ProblemWithCodeDetailAndHint()
    {
        using var client = _teal.Client();

        using var response = await client.GetAsync("/api/deployments/orders");

        response.StatusCode.ShouldBe(HttpStatusCode.NotFound);
        response.Content.Headers.ContentType!.MediaType.ShouldBe("application/problem+json");
        var problem = await ReadProblemAsync(response);
        problem.Status.ShouldBe(404);
        problem.Code.ShouldBe("deployment.not-found");
        problem.Detail.ShouldBe("no deployment 'orders'");
        problem.Hint.ShouldNotBeNullOrEmpty();
    }

    [Fact]
    public async Task Create_UnknownSource_Is404AndNothingStored()
    {
        using var client = _teal.Client();

        using var response = await client.PostAsJsonAsync("/api/deployments", new { name = "orders", source = "nope" });

        response.StatusCode.ShouldBe(HttpStatusCode.NotFound);
        (await ReadProblemAsync(response)).Code.ShouldBe("instance.not-found");
        (await _teal.State.ListDeploymentsAsync(default)).ShouldBeEmpty();
    }

    [Fact]
    public async Task MalformedBody_Is400Problem()
    {
        using var client = _teal.Client();

        using var response = await client.PostAsync("/api/instances", new StringContent("{not json", System.Text.Encoding.UTF8, "application/json"));

        response.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        (await ReadProblemAsync(response)).Code.ShouldBe("request.invalid");
    }

    [Fact]
    public async Task InvalidInstanceName_Is400()
    {
        using var client = _teal.Client();

        using var response = await client.PostAsJsonAsync("/api/instances", new { name = "Bad Name", connection = "host=127.0.0.1" });

        response.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        (await ReadProblemAsync(response)).Code.ShouldBe("instance.invalid-name");
    }

    [Fact]
    public async Task UnknownApiRoute_Is404Problem()
    {
        using var client = _teal.Client();

        using var response = await client.GetAsync("/api/nothing-here");

        response.StatusCode.ShouldBe(HttpStatusCode.NotFound);
        (await ReadProblemAsync(response)).Code.ShouldBe("request.no-route");
    }

    [Fact]
    public async Task OpenApiDocument_ListsTheRoutes()
    {
        using var client = _teal.Client(withToken: false);

        var document = await client.GetStringAsync("/openapi/v1.json");

        document.ShouldContain("/api/deployments");
        document.ShouldContain("/api/instances/{name}/url");
    }

    [Fact]
    public async Task Engines_ListsInstalledPostgres()
    {
        using var client = _teal.Client(withToken: false);

        using var document = JsonDocument.Parse(await client.GetStringAsync("/api/engines"));

        var engine = document.RootElement.EnumerateArray().First(e => e.GetProperty("majorVersion").GetInt32() == 15);
        engine.GetProperty("engine").GetString().ShouldBe("postgres");
        engine.GetProperty("source").GetString().ShouldBe("debian");
        Directory.Exists(engine.GetProperty("binDirectory").GetString()).ShouldBeTrue();
    }

    [Fact]
    public async Task Events_LongPoll_AnswersWhenAnEventArrives()
    {
        using var client = _teal.Client(withToken: false);
        var existing = await _teal.State.ListEventsAsync(null, 0, 1000, default);
        var last = existing.Count == 0 ? 0 : existing[^1].Seq;

        var poll = client.GetStringAsync($"/api/events?after={last}&wait=30");
        await Task.Delay(300);
        poll.IsCompleted.ShouldBeFalse();
        await _teal.State.AppendEventAsync(null, "instance-added", "hello", null, default);

        var body = await poll.WaitAsync(TimeSpan.FromSeconds(10));
        body.ShouldContain("hello");
    }

    [Fact]
    public async Task Restart_KeepsTokenAndState()
    {
        await _teal.State.AppendEventAsync(null, "instance-added", "before restart", null, default);
        var token = _teal.Token;
        await _teal.DisposeAsync();

        _teal = await TealHost.StartAsync(_teal.DataDirectory);

        _teal.Token.ShouldBe(token);
        (await _teal.State.ListEventsAsync(null, 0, 100, default)).ShouldContain(e => e.Message == "before restart");
    }

    private static async Task<ApiProblem> ReadProblemAsync(HttpResponseMessage response) =>
        (await response.Content.ReadFromJsonAsync<ApiProblem>(TealJson.Options))!;
}
