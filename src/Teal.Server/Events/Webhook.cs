namespace Teal.Server.Events;

/// <summary>
/// A webhook sink: every event is POSTed to <see cref="Url"/> as JSON. The signing secret lives
/// in the secret store under <see cref="SecretRef"/>, never here and never in API output.
/// </summary>
public sealed record Webhook(string Id, Uri Url, DateTimeOffset CreatedAt)
{
    public string? SecretRef { get; init; }
}

/// <summary>Body of <c>POST /api/webhooks</c>.</summary>
public sealed record AddWebhookRequest(string Url)
{
    /// <summary>When set, each delivery carries <c>X-Teal-Signature-256: sha256=HMAC(secret, body)</c>.</summary>
    public string? Secret { get; init; }
}

/// <summary>A webhook as the API shows it: whether it signs, never the secret; how its deliveries went.</summary>
public sealed record WebhookView(string Id, Uri Url, DateTimeOffset CreatedAt, bool HasSecret)
{
    public long Delivered { get; init; }

    /// <summary>Events given up on after every retry failed.</summary>
    public long Failed { get; init; }

    /// <summary>Events dropped because the webhook's queue was full (it was failing for long).</summary>
    public long Dropped { get; init; }

    public int Queued { get; init; }

    public string? LastError { get; init; }
}
