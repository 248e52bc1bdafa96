using System.CommandLine;
using Teal.Cli.Rendering;
using Teal.Core.Deployments;
using Teal.Core.Guardrails;
using Teal.Core.Switchover;
using Teal.Server.Api;

namespace Teal.Cli.Commands;

/// <summary><c>teal check ID</c> (the guardrails) and <c>teal switchover ID [--dry-run] [--wait]</c>.</summary>
internal static class SwitchoverCommands
{
    public static IEnumerable<Command> Create(CliSession session) => [Check(session), Switchover(session)];

    private static Command Check(CliSession session)
    {
        var id = new Argument<string>("ID") { Description = "Deployment id or name" };
        var timeout = TimeoutOption();
        var command = new Command("check", "Run the switchover guardrails without switching over") { id, timeout };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Post, $"/api/deployments/{Uri.EscapeDataString(parse.GetValue(id)!)}/check", new SwitchoverRequest(parse.GetValue(timeout), null, null), ct);
            var report = ApiClient.Parse<CheckReport>(body);
            if (session.Json(parse))
            {
                session.WriteJson(body);
            }
            else
            {
                WriteChecks(session.Output, report);
            }

            return report.Passed ? ExitCodes.Ok : throw Refusal(report);
        });
        return command;
    }

    private static Command Switchover(CliSession session)
    {
        var id = new Argument<string>("ID") { Description = "Deployment id or name" };
        var timeout = TimeoutOption();
        var dryRun = new Option<bool>("--dry-run") { Description = "Show the plan and the guardrails; change nothing" };
        var wait = new Option<bool>("--wait") { Description = "Follow the phases until the switchover completes or rolls back" };
        var command = new Command("switchover", "Switch production to green: guardrails, fence, catch up, flip the endpoints, resume") { id, timeout, dryRun, wait };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var path = $"/api/deployments/{Uri.EscapeDataString(parse.GetValue(id)!)}/switchover";
            var body = await api.SendAsync(HttpMethod.Post, path, new SwitchoverRequest(parse.GetValue(timeout), null, null, parse.GetValue(dryRun)), ct);
            if (parse.GetValue(dryRun))
            {
                var plan = ApiClient.Parse<SwitchoverPlanView>(body);
                if (session.Json(parse))
                {
                    session.WriteJson(body);
                }
                else
                {
                    WritePlan(session.Output, plan);
                }

                return plan.Guardrails.Passed ? ExitCodes.Ok : throw Refusal(plan.Guardrails);
            }

            var deployment = ApiClient.Parse<Deployment>(body);
            if (!parse.GetValue(wait))
            {
                if (session.Json(parse))
                {
                    session.WriteJson(body);
                }
                else
                {
                    await session.Output.WriteLineAsync($"switchover of {deployment.Name} started (follow it: teal show {deployment.Name} --watch)");
                }

                return ExitCodes.Ok;
            }

            return await WaitAsync(session, parse, api, deployment, ct);
        });
        return command;
    }

    /// <summary>Polls a few times a second (the whole switchover takes about one), printing each phase.</summary>
    private static async Task<int> WaitAsync(CliSession session, ParseResult parse, ApiClient api, Deployment deployment, CancellationToken ct)
    {
        string? lastPhase = null;
        while (deployment.Status == DeploymentStatus.SwitchoverInProgress || deployment.Switchover?.Outcome == SwitchoverOutcome.InProgress)
        {
            if (!session.Json(parse) && deployment.Switchover?.Phase is { } phase && phase != lastPhase)
            {
                lastPhase = phase;
                await session.Output.WriteLineAsync($"phase {phase}");
            }

            await Task.Delay(TimeSpan.FromMilliseconds(200), ct);
            deployment = ApiClient.Parse<Deployment>(await api.SendAsync(HttpMethod.Get, $"/api/deployments/{deployment.Id}", null, ct));
        }

        if (session.Json(parse))
        {
            session.WriteJson(deployment);
        }

        var s = deployment.Switchover;
        if (deployment.Status == DeploymentStatus.SwitchoverCompleted)
        {
            if (!session.Json(parse))
            {
                var pause = s?.WritePauseMilliseconds is { } ms ? $"; writes paused {ms:0} ms" : string.Empty;
                await session.Output.WriteLineAsync($"switchover of {deployment.Name} completed: {deployment.Blue} is production{pause}");
            }

            return ExitCodes.Ok;
        }

        throw new CliException(
            $"switchover of {deployment.Name} did not complete ({Format.Name(deployment.Status)}): {s?.Reason ?? deployment.StatusReason}",
            $"blue stays production; see `teal events {deployment.Name}`, fix the cause and switch over again");
    }

    private static Option<int?> TimeoutOption() =>
        new("--switchover-timeout") { Description = "Seconds the switchover may take before it rolls back (30–3600, default 300)" };

    private static void WriteChecks(TextWriter output, CheckReport report)
    {
        var table = new Table("CHECK", "RESULT", "MESSAGE");
        foreach (var r in report.Results)
        {
            table.Add(r.Name, Format.Name(r.Outcome), r.Message);
        }

        table.WriteTo(output);
    }

    private static void WritePlan(TextWriter output, SwitchoverPlanView plan)
    {
        output.WriteLine($"switchover plan for {plan.Deployment} (timeout {plan.TimeoutSeconds} s):");
        var steps = new Table("#", "STEP", "WHAT");
        var n = 1;
        foreach (var step in plan.Steps)
        {
            steps.Add((n++).ToString(System.Globalization.CultureInfo.InvariantCulture), step.Name + (step.PointOfNoReturn ? " (point of no return)" : string.Empty), step.Description);
        }

        steps.WriteTo(output);
        output.WriteLine();
        WriteChecks(output, plan.Guardrails);
    }

    private static CliException Refusal(CheckReport report)
    {
        var failures = report.Failures.ToList();
        var message = failures.Count == 1 ? $"{failures[0].Name}: {failures[0].Message}" : $"{failures.Count} guardrails failed: " + string.Join("; ", failures.Select(f => $"{f.Name}: {f.Message}"));
        return new CliException(message, string.Join(" ", failures.Select(f => f.Hint).Where(h => !string.IsNullOrEmpty(h))));
    }
}
