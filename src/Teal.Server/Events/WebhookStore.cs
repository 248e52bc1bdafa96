using System.Security.Cryptography;
using System.Text.Json;
using Teal.Core.Errors;
using Teal.Core.Secrets;
using Teal.Server.Json;

namespace Teal.Server.Events;

/// <summary>
/// The webhooks, in <c>webhooks.json</c> under the data directory (replaced atomically on every
/// change); their secrets in the secret store. Reads are served from memory.
/// </summary>
public sealed class WebhookStore
{
    public const string FileName = "webhooks.json";

    private readonly Lock _lock = new();
    private readonly string _path;
    private readonly ISecretStore _secrets;
    private readonly TimeProvider _time;
    private IReadOnlyList<Webhook> _webhooks;

    public WebhookStore(TealServerOptions options, ISecretStore secrets, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(options);
        _path = Path.Combine(options.DataDirectory, FileName);
        _secrets = secrets;
        _time = time;
        _webhooks = File.Exists(_path) ? JsonSerializer.Deserialize<List<Webhook>>(File.ReadAllText(_path), TealJson.Options) ?? [] : [];
    }

    public IReadOnlyList<Webhook> List() => Volatile.Read(ref _webhooks);

    public Webhook Add(AddWebhookRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (!Uri.TryCreate(request.Url, UriKind.Absolute, out var url) || (url.Scheme != Uri.UriSchemeHttp && url.Scheme != Uri.UriSchemeHttps))
        {
            throw new TealException("webhook.invalid-url", $"'{request.Url}' is not an http(s) URL", "give the receiver's full address, e.g. https://hooks.example.com/teal");
        }

        if (request.Secret is { Length: 0 })
        {
            throw new TealException("webhook.empty-secret", "the secret is empty", "leave --secret out for unsigned deliveries, or give a non-empty secret");
        }

        var id = "wh-" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4));
        var webhook = new Webhook(id, url, _time.GetUtcNow());
        if (request.Secret is { } secret)
        {
            webhook = webhook with { SecretRef = $"webhook/{id}" };
            _secrets.Write(webhook.SecretRef, secret);
        }

        lock (_lock)
        {
            Save([.. _webhooks, webhook]);
        }

        return webhook;
    }

    public void Remove(string id)
    {
        lock (_lock)
        {
            var webhook = _webhooks.FirstOrDefault(w => w.Id == id)
                ?? throw new TealException("webhook.not-found", $"no webhook '{id}'", "see `teal webhook list`") { Kind = TealErrorKind.NotFound };
            Save([.. _webhooks.Where(w => w.Id != id)]);
            if (webhook.SecretRef is { } reference)
            {
                _secrets.Remove(reference);
            }
        }
    }

    public string? SecretOf(Webhook webhook) => webhook?.SecretRef is { } reference ? _secrets.Read(reference) : null;

    private void Save(List<Webhook> webhooks)
    {
        var temp = _path + ".tmp";
        File.WriteAllText(temp, JsonSerializer.Serialize(webhooks, TealJson.Options));
        File.Move(temp, _path, overwrite: true);
        Volatile.Write(ref _webhooks, webhooks);
    }
}
