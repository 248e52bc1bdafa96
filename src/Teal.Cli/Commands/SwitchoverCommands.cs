using System.CommandLine;
using Teal.Cli.Rendering;
using Teal.Core.Deployments;
using Teal.Core.Guardrails;
using Teal.Core.Switchover;
using Teal.Server.Api;

namespace Teal.Cli.Commands;

/// <summary>The switchover verbs: <c>check</c> (every guardrail) and <c>switchover</c> (dry run, start, follow).</summary>
internal static class SwitchoverCommands
{
    public static IEnumerable<Command> Create(CliSession session) => [Check(session), Switchover(session)];

    private static Option<int?> TimeoutOption() => Verb.Seconds(
        "--switchover-timeout",
        $"Seconds everything up to the point of no return may take ({SwitchoverOptions.MinTimeoutSeconds}–{SwitchoverOptions.MaxTimeoutSeconds}, default {SwitchoverOptions.DefaultTimeoutSeconds}); past it all is rolled back",
        SwitchoverOptions.MinTimeoutSeconds,
        SwitchoverOptions.MaxTimeoutSeconds);

    private static Option<double?> ThresholdOption() => new("--long-transaction-threshold")
    {
        Description = "Seconds after which an open write transaction on blue refuses the switchover (default 10)",
    };

    private static Command Check(CliSession session)
    {
        var id = new Argument<string>("ID") { Description = "Deployment id or name" };
        var timeout = TimeoutOption();
        var threshold = ThresholdOption();
        var command = new Command("check", "Run every switchover guardrail and report each; changes nothing") { id, timeout, threshold };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var request = new SwitchoverRequest(parse.GetValue(timeout), null, parse.GetValue(threshold));
            var body = await api.SendAsync(HttpMethod.Post, $"/api/deployments/{Uri.EscapeDataString(parse.GetValue(id)!)}/check", request, ct);
            var report = ApiClient.Parse<CheckReport>(body);
            if (session.Json(parse))
            {
                session.WriteJson(body);
            }
            else
            {
                WriteReport(session, report);
            }

            return report.Passed ? ExitCodes.Ok : ExitCodes.Refused;
        });
        return command;
    }

    private static Command Switchover(CliSession session)
    {
        var id = new Argument<string>("ID") { Description = "Deployment id or name" };
        var timeout = TimeoutOption();
        var threshold = ThresholdOption();
        var drain = new Option<double?>("--drain-budget") { Description = "Seconds in-flight transactions get to finish before their sessions are closed (default 5)" };
        var dryRun = new Option<bool>("--dry-run") { Description = "Print the plan and the guardrails; change nothing" };
        var wait = new Option<bool>("--wait") { Description = "Follow the phases until the switchover completes or rolls back" };
        var command = new Command("switchover", "Switch applications from blue to green: guardrails, fenced cutover, rollback before the point of no return")
        {
            id, timeout, drain, threshold, dryRun, wait,
        };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var request = new SwitchoverRequest(parse.GetValue(timeout), parse.GetValue(drain), parse.GetValue(threshold), parse.GetValue(dryRun));
            var path = $"/api/deployments/{Uri.EscapeDataString(parse.GetValue(id)!)}/switchover";
            var body = await api.SendAsync(HttpMethod.Post, path, request, ct);
            if (request.DryRun)
            {
                var plan = ApiClient.Parse<SwitchoverPlanView>(body);
                if (session.Json(parse))
                {
                    session.WriteJson(body);
                }
                else
                {
                    await session.Output.WriteLineAsync($"switchover plan for {plan.Deployment} (timeout {plan.TimeoutSeconds} s):");
                    var n = 1;
                    foreach (var step in plan.Steps)
                    {
                        var marker = step.PointOfNoReturn ? "  ← point of no return" : string.Empty;
                        await session.Output.WriteLineAsync($"  {n++,2}. {step.Name,-18} {step.Description}{marker}");
                    }

                    await session.Output.WriteLineAsync();
                    WriteReport(session, plan.Guardrails);
                }

                return plan.Guardrails.Passed ? ExitCodes.Ok : ExitCodes.Refused;
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
                    await session.Output.WriteLineAsync($"switchover {deployment.Switchover?.Id} of {deployment.Name} started; follow it with `teal show {deployment.Name} --watch`");
                }

                return ExitCodes.Ok;
            }

            return await FollowAsync(session, parse, api, deployment, ct);
        });
        return command;
    }

    /// <summary>Prints each phase as it starts, then the outcome; exit 1 when rolled back.</summary>
    private static async Task<int> FollowAsync(CliSession session, ParseResult parse, ApiClient api, Deployment deployment, CancellationToken ct)
    {
        string? lastPhase = null;
        while (deployment.Status == DeploymentStatus.SwitchoverInProgress)
        {
            var phase = deployment.Switchover?.Phase;
            if (phase != lastPhase && phase is not null && !session.Json(parse))
            {
                await session.Output.WriteLineAsync($"  {phase}");
                lastPhase = phase;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(100), ct);
            deployment = ApiClient.Parse<Deployment>(await api.SendAsync(HttpMethod.Get, $"/api/deployments/{deployment.Id}", null, ct));
        }

        if (session.Json(parse))
        {
            session.WriteJson(deployment);
        }
        else if (deployment.Switchover is { } s)
        {
            var table = new Table("PHASE", "RESULT", "MS");
            foreach (var p in s.Phases)
            {
                table.Add(p.Step, p.Result, p.Milliseconds.ToString("0.0", System.Globalization.CultureInfo.InvariantCulture));
            }

            table.WriteTo(session.Output);
        }

        if (deployment.Status == DeploymentStatus.SwitchoverCompleted)
        {
            if (!session.Json(parse))
            {
                var pause = deployment.Switchover?.WritePauseMilliseconds is { } ms ? $"; clients were held for {ms:0} ms" : string.Empty;
                await session.Output.WriteLineAsync($"switchover completed: {deployment.Green} is now the writer (PostgreSQL green), old blue is {deployment.Blue} and read-only{pause}");
            }

            return ExitCodes.Ok;
        }

        throw new CliException(
            $"switchover of {deployment.Name} rolled back: {deployment.Switchover?.Reason ?? deployment.StatusReason}",
            $"blue '{deployment.Blue}' is writable again; fix the cause (`teal check {deployment.Name}`) and run the switchover again");
    }

    private static void WriteReport(CliSession session, CheckReport report)
    {
        var table = new Table("GUARDRAIL", "RESULT", "MESSAGE", "HINT");
        foreach (var r in report.Results)
        {
            table.Add(r.Name, Format.Name(r.Outcome), r.Message, r.Passed ? null : r.Hint);
        }

        table.WriteTo(session.Output);
        session.Output.WriteLine(report.Passed ? "all guardrails pass" : $"{report.Failures.Count()} guardrail(s) fail: the switchover would be refused");
    }
}
