using System.CommandLine;
using System.Globalization;
using Teal.Cli.Rendering;
using Teal.Server.Events;

namespace Teal.Cli.Commands;

/// <summary><c>teal webhook add|list|remove</c>: where events are POSTed.</summary>
internal static class WebhookCommands
{
    public static Command Create(CliSession session) =>
        new("webhook", "Webhooks: every event POSTed as JSON to a URL, signed with HMAC-SHA256 when a secret is set")
        {
            Add(session),
            List(session),
            Remove(session),
        };

    private static Command Add(CliSession session)
    {
        var url = new Argument<string>("URL") { Description = "The receiver's http(s) address" };
        var secret = new Option<string?>("--secret") { Description = "Sign each delivery: header X-Teal-Signature-256 = sha256=HEX(HMAC-SHA256(secret, body)) (or $TEAL_WEBHOOK_SECRET)" };
        var command = new Command("add", "Send every event from now on to URL (retried with backoff; never delays a switchover)") { url, secret };
        command.SetAction(async (parse, ct) =>
        {
            var request = new AddWebhookRequest(parse.GetValue(url)!) { Secret = parse.GetValue(secret) ?? session.Environment("TEAL_WEBHOOK_SECRET") };
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Post, "/api/webhooks", request, ct);
            if (session.Json(parse))
            {
                session.WriteJson(body);
            }
            else
            {
                var w = ApiClient.Parse<WebhookView>(body);
                await session.Output.WriteLineAsync($"webhook {w.Id} → {w.Url}{(w.HasSecret ? " (signed)" : string.Empty)}");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command List(CliSession session)
    {
        var command = new Command("list", "List webhooks with their delivery figures");
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Get, "/api/webhooks", null, ct);
            if (session.Json(parse))
            {
                session.WriteJson(body);
                return ExitCodes.Ok;
            }

            var table = new Table("ID", "URL", "SIGNED", "DELIVERED", "FAILED", "QUEUED", "LAST ERROR");
            foreach (var w in ApiClient.Parse<WebhookView[]>(body))
            {
                table.Add(w.Id, w.Url.ToString(), w.HasSecret ? "yes" : "no", Count(w.Delivered), Count(w.Failed + w.Dropped), Count(w.Queued), w.LastError);
            }

            table.WriteTo(session.Output);
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Remove(CliSession session)
    {
        var id = new Argument<string>("ID");
        var command = new Command("remove", "Stop sending events to a webhook") { id };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            await api.SendAsync(HttpMethod.Delete, $"/api/webhooks/{Uri.EscapeDataString(parse.GetValue(id)!)}", null, ct);
            if (!session.Json(parse))
            {
                await session.Output.WriteLineAsync($"webhook {parse.GetValue(id)} removed");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static string Count(long value) => value.ToString(CultureInfo.InvariantCulture);
}
