using System.CommandLine;
using Teal.Cli.Rendering;
using Teal.Core.Events;

namespace Teal.Cli.Commands;

/// <summary><c>teal events [ID] [--follow]</c>: the event log, optionally streamed.</summary>
internal static class EventCommands
{
    private const int FollowWaitSeconds = 30;

    public static Command Create(CliSession session)
    {
        var deployment = new Argument<string?>("ID") { Description = "Deployment id or name (default: all events)", Arity = ArgumentArity.ZeroOrOne };
        var follow = new Option<bool>("--follow", "-f") { Description = "Keep printing new events until Ctrl-C" };
        var command = new Command("events", "Show events (created, tasks, replication, switchover, …)") { deployment, follow };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var filter = parse.GetValue(deployment) is { } d ? $"&deployment={Uri.EscapeDataString(d)}" : string.Empty;
            var json = session.Json(parse);
            long after = 0;
            var first = true;
            try
            {
                do
                {
                    var wait = first ? 0 : FollowWaitSeconds;
                    var body = await api.SendAsync(HttpMethod.Get, $"/api/events?after={after}&wait={wait}{filter}", null, ct);
                    var events = ApiClient.Parse<DeploymentEvent[]>(body);
                    if (json && !parse.GetValue(follow))
                    {
                        session.WriteJson(body);
                    }
                    else
                    {
                        Write(session, events, json, header: first && !json);
                    }

                    after = events.Length > 0 ? events[^1].Seq : after;
                    first = false;
                }
                while (parse.GetValue(follow));
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                // Ctrl-C ends --follow.
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static void Write(CliSession session, DeploymentEvent[] events, bool json, bool header)
    {
        if (json)
        {
            // --follow with json: one event per line, so a script can read the stream line by line.
            foreach (var e in events)
            {
                session.Output.WriteLine(System.Text.Json.JsonSerializer.Serialize(e, Teal.Server.Json.TealJson.Options));
            }

            return;
        }

        var table = new Table("SEQ", "TIME", "DEPLOYMENT", "KIND", "MESSAGE");
        foreach (var e in events)
        {
            table.Add(e.Seq.ToString(System.Globalization.CultureInfo.InvariantCulture), Format.Time(e.Time), e.DeploymentId?.Value, e.Kind, e.Message);
        }

        if (header)
        {
            table.WriteTo(session.Output);
        }
        else
        {
            // Later pages of --follow continue the first table without repeating its header.
            using var text = new StringWriter();
            table.WriteTo(text);
            foreach (var line in text.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1))
            {
                session.Output.WriteLine(line);
            }
        }
    }
}
