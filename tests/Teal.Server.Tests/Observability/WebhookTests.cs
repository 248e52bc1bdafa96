using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Teal.Server.Events;
using Teal.Server.Json;
using Teal.Server.Tests.Support;

namespace Teal.Server.Tests.Observability;

/// <summary>Webhooks: signed, retried against a receiver that fails on purpose, never blocking, secret never shown.</summary>
public sealed class WebhookTests : IAsyncLifetime
{
    private const string Secret = "whsec-for-tests-7f3a";

    private TealHost _teal = null!; // Set in InitializeAsync.
    private Receiver _receiver = null!;

    public async Task InitializeAsync()
    {
        _receiver = await Receiver.StartAsync();
        // Short backoff so retries happen within the test; the shape (doubling, capped) is the product's.
        _teal = await TealHost.StartAsync(configure: services => services.Replace(ServiceDescriptor.Singleton(new WebhookOptions
        {
            InitialBackoff = TimeSpan.FromMilliseconds(100),
            MaxBackoff = TimeSpan.FromMilliseconds(400),
            // Room for a loaded machine: a delivery that times out counts as a failed try, and
            // the tests below count the receiver's deliberate failures, not slow answers.
            MaxAttempts = 8,
            RequestTimeout = TimeSpan.FromSeconds(10),
        })));
    }

    public async Task DisposeAsync()
    {
        await _teal.DisposeAsync();
        await _receiver.DisposeAsync();
    }

    [Fact]
    public async Task Event_ToAFailingReceiver_IsRetriedUntilDelivered_SignedWithTheSecret()
    {
        _receiver.FailNext(2);
        using var client = _teal.Client();
        (await client.PostAsJsonAsync("/api/webhooks", new { url = _receiver.Url + "hook", secret = Secret })).StatusCode.ShouldBe(HttpStatusCode.Created);

        await _teal.State.AppendEventAsync(null, "instance-added", "hello webhook", new Dictionary<string, string> { ["instance"] = "blue" }, default);

        var delivery = await _receiver.WaitForAsync(d => d.Status == 200, TimeSpan.FromSeconds(30));
        _receiver.Deliveries.Count(d => d.Status != 200).ShouldBe(2);
        delivery.Headers["X-Teal-Event"].ShouldBe("instance-added");
        delivery.Headers[WebhookDispatcher.SignatureHeader].ShouldBe(ExpectedSignature(delivery.Body));
        using var body = JsonDocument.Parse(delivery.Body);
        body.RootElement.GetProperty("message").GetString().ShouldBe("hello webhook");
        body.RootElement.GetProperty("data").GetProperty("instance").GetString().ShouldBe("blue");
        var listed = await client.GetStringAsync("/api/webhooks");
        listed.ShouldContain("\"delivered\":1");
    }

    [Fact]
    public async Task Webhook_SecretNeverShown_InApiOutputOrItsFile()
    {
        using var client = _teal.Client();

        using var created = await client.PostAsJsonAsync("/api/webhooks", new { url = _receiver.Url + "hook", secret = Secret });

        var createdBody = await created.Content.ReadAsStringAsync();
        createdBody.ShouldNotContain(Secret);
        createdBody.ShouldContain("\"hasSecret\":true");
        (await client.GetStringAsync("/api/webhooks")).ShouldNotContain(Secret);
        (await File.ReadAllTextAsync(Path.Combine(_teal.DataDirectory, WebhookStore.FileName))).ShouldNotContain(Secret);
    }

    [Fact]
    public async Task Webhook_UnsignedWithoutSecret_AndRemovedStopsDeliveries()
    {
        using var client = _teal.Client();
        var view = await (await client.PostAsJsonAsync("/api/webhooks", new { url = _receiver.Url + "plain" })).Content.ReadFromJsonAsync<WebhookView>(TealJson.Options);
        await _teal.State.AppendEventAsync(null, "instance-added", "first", null, default);
        var first = await _receiver.WaitForAsync(d => d.Status == 200, TimeSpan.FromSeconds(30));
        first.Headers.ContainsKey(WebhookDispatcher.SignatureHeader).ShouldBeFalse();

        (await client.DeleteAsync($"/api/webhooks/{view!.Id}")).StatusCode.ShouldBe(HttpStatusCode.NoContent);
        await _teal.State.AppendEventAsync(null, "instance-added", "after removal", null, default);
        await Task.Delay(1500);

        _receiver.Deliveries.ShouldNotContain(d => d.Body.Contains("after removal", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Stopping_WithWebhooksDelivering_EndsTheDispatcherWithoutAFault()
    {
        using var client = _teal.Client();
        // Many senders, so that some end on the stopping token before the dispatcher reaches them.
        for (var i = 0; i < 40; i++)
        {
            await client.PostAsJsonAsync("/api/webhooks", new { url = _receiver.Url + $"hook{i}" });
        }

        await _teal.State.AppendEventAsync(null, "instance-added", "before the stop", null, default);
        await _receiver.WaitForAsync(d => d.Path == "/hook39" && d.Status == 200, TimeSpan.FromSeconds(30));
        var dispatcher = _teal.Services.GetServices<Microsoft.Extensions.Hosting.IHostedService>().OfType<WebhookDispatcher>().Single();

        // The stop cancels each webhook's sender, which ends by itself, and the dispatcher then
        // stops them all: a shutdown must not report the service as failed.
        await dispatcher.StopAsync(CancellationToken.None);

        await dispatcher.ExecuteTask!.WaitAsync(TimeSpan.FromSeconds(10));
        dispatcher.ExecuteTask.IsCompletedSuccessfully.ShouldBeTrue();
    }

    [Fact]
    public async Task Event_ToAReceiverThatNeverAnswers_DoesNotHoldUpRecordingOrOtherWebhooks()
    {
        _receiver.HangAt("/hang");
        using var client = _teal.Client();
        await client.PostAsJsonAsync("/api/webhooks", new { url = _receiver.Url + "hang" });
        await client.PostAsJsonAsync("/api/webhooks", new { url = _receiver.Url + "ok" });

        for (var i = 0; i < 20; i++)
        {
            await _teal.State.AppendEventAsync(null, "instance-added", $"event {i}", null, default).WaitAsync(TimeSpan.FromSeconds(5));
        }

        await _receiver.WaitForAsync(d => d.Path == "/ok" && d.Body.Contains("event 19", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
    }

    [Fact]
    public async Task Add_NotAnHttpUrl_Is400()
    {
        using var client = _teal.Client();

        using var response = await client.PostAsJsonAsync("/api/webhooks", new { url = "ftp://example.com/x" });

        response.StatusCode.ShouldBe(HttpStatusCode.BadRequest);
        (await response.Content.ReadAsStringAsync()).ShouldContain("webhook.invalid-url");
    }

    private static string ExpectedSignature(string body) =>
        "sha256=" + Convert.ToHexStringLower(System.Security.Cryptography.HMACSHA256.HashData(Encoding.UTF8.GetBytes(Secret), Encoding.UTF8.GetBytes(body)));

    /// <summary>A local HTTP receiver that records each request and fails, or hangs, when told to.</summary>
    private sealed class Receiver : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly CancellationTokenSource _stopping = new();
        private int _failNext;
        private string? _hangPath;

        private Receiver(WebApplication app) => _app = app;

        public ConcurrentQueue<Delivery> Deliveries { get; } = new();

        public string Url => TealServer.BoundAddress(_app).ToString();

        public static async Task<Receiver> StartAsync()
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.WebHost.UseUrls("http://127.0.0.1:0");
            var app = builder.Build();
            var receiver = new Receiver(app);
            app.Run(receiver.HandleAsync);
            await app.StartAsync();
            return receiver;
        }

        public void FailNext(int count) => Volatile.Write(ref _failNext, count);

        public void HangAt(string path) => _hangPath = path;

        public async Task<Delivery> WaitForAsync(Func<Delivery, bool> match, TimeSpan timeout)
        {
            var deadline = DateTime.UtcNow + timeout;
            while (DateTime.UtcNow < deadline)
            {
                if (Deliveries.FirstOrDefault(match) is { } found)
                {
                    return found;
                }

                await Task.Delay(50);
            }

            throw new TimeoutException($"no matching delivery; got: {string.Join(" | ", Deliveries.Select(d => $"{d.Path} {d.Status}"))}");
        }

        public async ValueTask DisposeAsync()
        {
            await _stopping.CancelAsync();
            await _app.StopAsync();
            await _app.DisposeAsync();
            _stopping.Dispose();
        }

        private async Task HandleAsync(HttpContext context)
        {
            using var reader = new StreamReader(context.Request.Body);
            var body = await reader.ReadToEndAsync();
            if (context.Request.Path == _hangPath)
            {
                await Task.Delay(Timeout.Infinite, _stopping.Token).ContinueWith(_ => { }, TaskScheduler.Default);
                return;
            }

            var status = Interlocked.Decrement(ref _failNext) >= 0 ? 503 : 200;
            Deliveries.Enqueue(new Delivery(context.Request.Path, status, body, context.Request.Headers.ToDictionary(h => h.Key, h => h.Value.ToString(), StringComparer.OrdinalIgnoreCase)));
            context.Response.StatusCode = status;
        }
    }

    private sealed record Delivery(string Path, int Status, string Body, Dictionary<string, string> Headers);
}
