using System.Text.Json;
using Teal.Server.Tests.Support;

namespace Teal.Server.Tests.Observability;

/// <summary><c>GET /api/events/stream</c>: server-sent events, live and resumable.</summary>
public sealed class EventStreamTests : IAsyncLifetime
{
    private TealHost _teal = null!; // Set in InitializeAsync.

    public async Task InitializeAsync() => _teal = await TealHost.StartAsync();

    public async Task DisposeAsync() => await _teal.DisposeAsync();

    [Fact]
    public async Task Stream_SendsEventsAsTheyAreRecorded()
    {
        using var client = _teal.Client(withToken: false);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await _teal.State.AppendEventAsync(null, "instance-added", "before the stream", null, default);

        using var response = await client.GetAsync("/api/events/stream", HttpCompletionOption.ResponseHeadersRead, timeout.Token);
        response.Content.Headers.ContentType!.MediaType.ShouldBe("text/event-stream");
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(timeout.Token));

        var backlog = await ReadEventAsync(reader, timeout.Token);
        backlog.Data.GetProperty("message").GetString().ShouldBe("before the stream");
        await _teal.State.AppendEventAsync(null, "instance-removed", "while streaming", null, default);
        var live = await ReadEventAsync(reader, timeout.Token);
        live.Kind.ShouldBe("instance-removed");
        live.Data.GetProperty("message").GetString().ShouldBe("while streaming");
        live.Id.ShouldBe(backlog.Id + 1);
    }

    [Fact]
    public async Task Stream_WithLastEventId_ResumesAfterIt()
    {
        var first = await _teal.State.AppendEventAsync(null, "instance-added", "seen before the drop", null, default);
        await _teal.State.AppendEventAsync(null, "instance-added", "missed while disconnected", null, default);
        using var client = _teal.Client(withToken: false);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        using var request = new HttpRequestMessage(HttpMethod.Get, "/api/events/stream");
        request.Headers.Add("Last-Event-ID", first.Seq.ToString(System.Globalization.CultureInfo.InvariantCulture));

        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(timeout.Token));

        (await ReadEventAsync(reader, timeout.Token)).Data.GetProperty("message").GetString().ShouldBe("missed while disconnected");
    }

    private static async Task<(long Id, string Kind, JsonElement Data)> ReadEventAsync(StreamReader reader, CancellationToken ct)
    {
        long id = 0;
        while (await reader.ReadLineAsync(ct) is { } line)
        {
            if (line.StartsWith("id: ", StringComparison.Ordinal))
            {
                id = long.Parse(line[4..], System.Globalization.CultureInfo.InvariantCulture);
            }
            else if (line.StartsWith("data: ", StringComparison.Ordinal))
            {
                var data = JsonDocument.Parse(line[6..]).RootElement.Clone();
                data.GetProperty("seq").GetInt64().ShouldBe(id);
                return (id, data.GetProperty("kind").GetString()!, data);
            }
        }

        throw new EndOfStreamException("the stream ended");
    }
}
