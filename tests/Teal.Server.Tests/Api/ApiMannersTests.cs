using System.Net;
using System.Net.Http.Json;
using System.Text;
using Teal.Server.Api;
using Teal.Server.Json;
using Teal.Server.Tests.Support;

namespace Teal.Server.Tests.Api;

/// <summary>What the API answers a request it cannot read: the media type, an empty or broken body, a bad setting name.</summary>
public sealed class ApiMannersTests : IAsyncLifetime
{
    private TealHost _teal = null!; // Set in InitializeAsync, before any test runs.

    public async Task InitializeAsync() => _teal = await TealHost.StartAsync();

    public async Task DisposeAsync() => await _teal.DisposeAsync();

    [Theory]
    [InlineData("text/plain")]
    [InlineData("application/x-www-form-urlencoded")]
    public async Task BodyThatIsNotJson_Is415ProblemNamingTheType(string contentType)
    {
        using var client = _teal.Client();

        using var response = await client.PostAsync("/api/instances", new StringContent("name=blue", Encoding.UTF8, contentType));

        response.StatusCode.ShouldBe(HttpStatusCode.UnsupportedMediaType);
        response.Content.Headers.ContentType!.MediaType.ShouldBe("application/problem+json");
        var problem = await ReadProblemAsync(response);
        problem.Status.ShouldBe(415);
        problem.Code.ShouldBe("request.unsupported-media-type");
        problem.Detail.ShouldContain(contentType);
        problem.Hint.ShouldNotBeNull().ShouldContain("application/json");
    }

    [Fact]
    public async Task JsonWithCharset_IsAccepted()
    {
        using var client = _teal.Client();

        using var response = await client.PostAsync("/api/instances", new StringContent("""{"name":"Bad Name","connection":"host=127.0.0.1"}""", Encoding.UTF8, "application/json"));

        // Read and refused on its merits, not on its media type.
        response.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        (await ReadProblemAsync(response)).Code.ShouldBe("instance.invalid-name");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task EmptyBody_Is400SayingTheCallTakesAJsonObject(bool withContentType)
    {
        using var client = _teal.Client();
        using var content = new ByteArrayContent([]);
        if (withContentType)
        {
            content.Headers.ContentType = new("application/json");
        }

        using var response = await client.PostAsync("/api/deployments", content);

        response.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        var problem = await ReadProblemAsync(response);
        problem.Detail.ShouldBe("the request has no body; POST /api/deployments takes a JSON object");
        problem.Code.ShouldBe("request.invalid");
    }

    [Fact]
    public async Task NullBody_Is400SayingItIsNotAnObject()
    {
        using var client = _teal.Client();

        using var response = await client.PostAsync("/api/deployments", new StringContent("null", Encoding.UTF8, "application/json"));

        response.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        (await ReadProblemAsync(response)).Detail.ShouldBe("the request body is not a JSON object; POST /api/deployments takes one");
    }

    [Fact]
    public async Task TruncatedJson_Is400NamingWhereItBroke()
    {
        using var client = _teal.Client();

        using var response = await client.PostAsync("/api/instances", new StringContent("{\"nam", Encoding.UTF8, "application/json"));

        response.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        var detail = (await ReadProblemAsync(response)).Detail;
        detail.ShouldStartWith("the request body is not valid JSON for POST /api/instances");
        detail.ShouldContain("line 1");
        detail.ShouldNotContain("Teal.Server");
    }

    [Fact]
    public async Task WrongValueType_Is400NamingTheField()
    {
        using var client = _teal.Client();

        using var response = await client.PostAsync("/api/instances", new StringContent("""{"name": 5}""", Encoding.UTF8, "application/json"));

        response.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        var detail = (await ReadProblemAsync(response)).Detail;
        detail.ShouldContain("at $.name");
        detail.ShouldContain("a value of the wrong type");
        detail.ShouldNotContain("Teal.Server");
    }

    [Theory]
    [InlineData("fsync\nlisten_addresses")]
    [InlineData("work_mem = 1")]
    [InlineData("shared_buffers'")]
    [InlineData("")]
    public async Task ManagedInstance_BadSettingName_Is400AndNothingCreated(string name)
    {
        using var client = _teal.Client();

        using var response = await client.PostAsJsonAsync("/api/instances", new { name = "managed", version = "15", parameters = new Dictionary<string, string> { [name] = "on" } });

        response.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        var problem = await ReadProblemAsync(response);
        problem.Code.ShouldBe("parameter.invalid-name");
        problem.Detail.ShouldNotContain("\n");
        (await _teal.State.ListInstancesAsync(default)).ShouldBeEmpty();
        Directory.EnumerateFileSystemEntries(Path.Combine(_teal.DataDirectory, "instances")).ShouldBeEmpty();
    }

    [Fact]
    public async Task ManagedInstance_ValueWithLineBreak_Is400()
    {
        using var client = _teal.Client();

        using var response = await client.PostAsJsonAsync("/api/instances", new { name = "managed", version = "15", parameters = new Dictionary<string, string> { ["work_mem"] = "4MB\nlisten_addresses = '*'" } });

        response.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        (await ReadProblemAsync(response)).Code.ShouldBe("parameter.invalid-value");
        (await _teal.State.ListInstancesAsync(default)).ShouldBeEmpty();
    }

    private static async Task<ApiProblem> ReadProblemAsync(HttpResponseMessage response) =>
        (await response.Content.ReadFromJsonAsync<ApiProblem>(TealJson.Options))!;
}
