using System.Collections.Concurrent;
using System.Globalization;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Teal.Core.Events;
using Teal.Core.State;
using Teal.Server.Json;
using Teal.Server.State;

namespace Teal.Server.Events;

/// <summary>
/// Delivers events to the webhooks. It follows the persisted event log, as any reader of the API
/// does, so nothing that records an event (the switchover least of all) ever waits for a
/// receiver. Each webhook has its own bounded queue and sender: a failing receiver is retried
/// with capped backoff and delays only its own deliveries, in order.
/// </summary>
public sealed partial class WebhookDispatcher(
    WebhookStore webhooks,
    IStateStore state,
    EventSignal signal,
    WebhookOptions options,
    TimeProvider time,
    ILogger<WebhookDispatcher> logger) : BackgroundService
{
    public const string SignatureHeader = "X-Teal-Signature-256";

    private readonly ConcurrentDictionary<string, Sink> _sinks = new(StringComparer.Ordinal);
    private readonly HttpClient _http = new() { Timeout = Timeout.InfiniteTimeSpan };

    private WebhookOptions Options => options;

    private TimeProvider Time => time;

    /// <summary>The webhooks with their delivery figures, for the API.</summary>
    public IReadOnlyList<WebhookView> List() =>
        [.. webhooks.List().Select(w => _sinks.TryGetValue(w.Id, out var sink) ? sink.View() : new WebhookView(w.Id, w.Url, w.CreatedAt, w.SecretRef is not null))];

    /// <summary>The signature a receiver recomputes: <c>sha256=</c> and the hex HMAC-SHA256 of the body.</summary>
    public static string Sign(string secret, byte[] body)
    {
        ArgumentNullException.ThrowIfNull(secret);
        return "sha256=" + Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), body));
    }

    public override void Dispose()
    {
        _http.Dispose();
        base.Dispose();
        GC.SuppressFinalize(this);
    }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            // Webhooks receive what happens from now on; the history is in the API.
            var after = await LatestSeqAsync(stoppingToken);
            while (!stoppingToken.IsCancellationRequested)
            {
                var next = signal.Next;
                var events = await state.ListEventsAsync(null, after, 500, stoppingToken);
                if (events.Count > 0)
                {
                    var current = Reconcile(stoppingToken);
                    foreach (var e in events)
                    {
                        foreach (var sink in current)
                        {
                            sink.Enqueue(e);
                        }

                        after = e.Seq;
                    }

                    continue;
                }

                // The signal wakes us at once; the timeout also picks up webhooks added or removed.
                await Task.WhenAny(next, Task.Delay(TimeSpan.FromSeconds(1), time, stoppingToken));
                Reconcile(stoppingToken);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        finally
        {
            foreach (var sink in _sinks.Values)
            {
                sink.Stop();
            }
        }
    }

    /// <summary>One sink per webhook now declared: new ones start, removed ones stop.</summary>
    private List<Sink> Reconcile(CancellationToken stoppingToken)
    {
        var declared = webhooks.List();
        foreach (var id in _sinks.Keys.Except(declared.Select(w => w.Id)).ToList())
        {
            if (_sinks.TryRemove(id, out var gone))
            {
                gone.Stop();
            }
        }

        return [.. declared.Select(w => _sinks.GetOrAdd(w.Id, _ => new Sink(this, w, stoppingToken)))];
    }

    private async Task<long> LatestSeqAsync(CancellationToken cancellationToken)
    {
        long after = 0;
        while (true)
        {
            var page = await state.ListEventsAsync(null, after, 5000, cancellationToken);
            if (page.Count == 0)
            {
                return after;
            }

            after = page[^1].Seq;
        }
    }

    /// <summary>One try: true when the receiver answered 2xx.</summary>
    private async Task<(bool Ok, string? Error)> PostAsync(Webhook webhook, DeploymentEvent e, CancellationToken cancellationToken)
    {
        var body = JsonSerializer.SerializeToUtf8Bytes(e, TealJson.Options);
        using var request = new HttpRequestMessage(HttpMethod.Post, webhook.Url) { Content = new ByteArrayContent(body) };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Headers.Add("X-Teal-Event", e.Kind);
        request.Headers.Add("X-Teal-Delivery", e.Seq.ToString(CultureInfo.InvariantCulture));
        request.Headers.UserAgent.Add(new ProductInfoHeaderValue("teal", TealServer.Version));
        if (webhooks.SecretOf(webhook) is { } secret)
        {
            request.Headers.Add(SignatureHeader, Sign(secret, body));
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(options.RequestTimeout);
        try
        {
            using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            return response.IsSuccessStatusCode ? (true, null) : (false, $"HTTP {(int)response.StatusCode}");
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return (false, $"no answer within {options.RequestTimeout.TotalSeconds:0} s");
        }
        catch (HttpRequestException ex)
        {
            return (false, ex.Message);
        }
    }

    [LoggerMessage(EventId = 2700, Level = LogLevel.Warning, Message = "Webhook {WebhookId} ({Url}): event {Seq} ({Kind}) not delivered after {Attempts} tries: {Error}")]
    private partial void LogGaveUp(string webhookId, Uri url, long seq, string kind, int attempts, string? error);

    [LoggerMessage(EventId = 2701, Level = LogLevel.Warning, Message = "Webhook {WebhookId} ({Url}): queue full, oldest event dropped")]
    private partial void LogDropped(string webhookId, Uri url);

    [LoggerMessage(EventId = 2702, Level = LogLevel.Debug, Message = "Webhook {WebhookId}: event {Seq} try {Attempt} failed: {Error}")]
    private partial void LogRetry(string webhookId, long seq, int attempt, string? error);

    /// <summary>A webhook's queue and the loop that empties it.</summary>
    private sealed class Sink
    {
        private readonly WebhookDispatcher _owner;
        private readonly Webhook _webhook;
        private readonly Channel<DeploymentEvent> _queue;
        private readonly CancellationTokenSource _stop;
        private long _delivered;
        private long _failed;
        private long _dropped;
        private string? _lastError;

        public Sink(WebhookDispatcher owner, Webhook webhook, CancellationToken stoppingToken)
        {
            _owner = owner;
            _webhook = webhook;
            _stop = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
            _queue = Channel.CreateBounded<DeploymentEvent>(
                new BoundedChannelOptions(owner.Options.QueueCapacity) { FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true, SingleWriter = true },
                _ =>
                {
                    Interlocked.Increment(ref _dropped);
                    owner.LogDropped(webhook.Id, webhook.Url);
                });
            _ = Task.Run(() => RunAsync(_stop.Token), CancellationToken.None);
        }

        public void Enqueue(DeploymentEvent e) => _queue.Writer.TryWrite(e);

        public void Stop()
        {
            _queue.Writer.TryComplete();
            try
            {
                _stop.Cancel();
            }
            catch (ObjectDisposedException)
            {
                // The sender has ended already: the service's stopping token, to which its own is
                // linked, cancelled it and it disposed its source before the dispatcher got here.
            }
        }

        public WebhookView View() => new(_webhook.Id, _webhook.Url, _webhook.CreatedAt, _webhook.SecretRef is not null)
        {
            Delivered = Interlocked.Read(ref _delivered),
            Failed = Interlocked.Read(ref _failed),
            Dropped = Interlocked.Read(ref _dropped),
            Queued = _queue.Reader.CanCount ? _queue.Reader.Count : 0,
            LastError = Volatile.Read(ref _lastError),
        };

        private async Task RunAsync(CancellationToken cancellationToken)
        {
            try
            {
                await foreach (var e in _queue.Reader.ReadAllAsync(cancellationToken))
                {
                    await DeliverAsync(e, cancellationToken);
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
            }
            finally
            {
                _stop.Dispose();
            }
        }

        private async Task DeliverAsync(DeploymentEvent e, CancellationToken cancellationToken)
        {
            var options = _owner.Options;
            string? error = null;
            for (var attempt = 1; attempt <= options.MaxAttempts; attempt++)
            {
                if (attempt > 1)
                {
                    await Task.Delay(options.BackoffBefore(attempt), _owner.Time, cancellationToken);
                }

                (var ok, error) = await _owner.PostAsync(_webhook, e, cancellationToken);
                if (ok)
                {
                    Interlocked.Increment(ref _delivered);
                    return;
                }

                Volatile.Write(ref _lastError, error);
                _owner.LogRetry(_webhook.Id, e.Seq, attempt, error);
            }

            Interlocked.Increment(ref _failed);
            _owner.LogGaveUp(_webhook.Id, _webhook.Url, e.Seq, e.Kind, options.MaxAttempts, error);
        }
    }
}
