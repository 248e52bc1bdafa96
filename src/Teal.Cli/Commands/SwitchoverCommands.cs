using System.CommandLine;
using Teal.Cli.Rendering;
using Teal.Core.Deployments;
using Teal.Core.Guardrails;
using Teal.Core.Switchover;
using Teal.Server.Api;

namespace Teal.Cli.Commands;

/// <summary>
/// The switchover verbs: <c>check</c> (every guardrail), <c>switchover</c> and <c>switchback</c>
/// (dry run, start, follow) and <c>finish</c> (end reverse replication, keep green).
/// </summary>
internal static class SwitchoverCommands
{
    public static IEnumerable<Command> Create(CliSession session) => [Check(session), Switchover(session), Switchback(session), Finish(session)];

    private static Option<int?> TimeoutOption() => Verb.Seconds(
        "--switchover-timeout",
        $"Seconds everything up to the point of no return may take ({SwitchoverOptions.MinTimeoutSeconds}–{SwitchoverOptions.MaxTimeoutSeconds}, default {SwitchoverOptions.DefaultTimeoutSeconds}); past it all is rolled back",
        SwitchoverOptions.MinTimeoutSeconds,
        SwitchoverOptions.MaxTimeoutSeconds);

    private static Option<double?> ThresholdOption() => new("--long-transaction-threshold")
    {
        Description = "Seconds after which an open write transaction on blue refuses the switchover (default 10)",
    };

    private static Option<bool> WholeServerOption() => new("--fence-whole-server")
    {
        Description = "Accept that the fence locks out every database on blue's server, not only the deployment's (it acts on logins, which are server-wide)",
    };

    private static Command Check(CliSession session)
    {
        var id = new Argument<string>("ID") { Description = "Deployment id or name" };
        var timeout = TimeoutOption();
        var threshold = ThresholdOption();
        var wholeServer = WholeServerOption();
        var command = new Command("check", "Run every switchover guardrail and report each; changes nothing") { id, timeout, threshold, wholeServer };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var request = new SwitchoverRequest(parse.GetValue(timeout), null, parse.GetValue(threshold)) { FenceWholeServer = parse.GetValue(wholeServer) };
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
        var wholeServer = WholeServerOption();
        var resume = new Option<bool>("--resume") { Description = "Continue a switchover stopped after the point of no return (SWITCHOVER_STOPPED), once its cause is fixed" };
        var command = new Command("switchover", "Switch applications from blue to green: guardrails, fenced cutover, rollback before the point of no return")
        {
            id, timeout, drain, threshold, dryRun, wait, wholeServer, resume,
        };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            if (parse.GetValue(resume))
            {
                var resumedBody = await api.SendAsync(HttpMethod.Post, $"/api/deployments/{Uri.EscapeDataString(parse.GetValue(id)!)}/switchover/resume", null, ct);
                var resumed = ApiClient.Parse<Deployment>(resumedBody);
                if (parse.GetValue(wait))
                {
                    return await FollowAsync(session, parse, api, resumed, ct);
                }

                if (session.Json(parse))
                {
                    session.WriteJson(resumedBody);
                }
                else
                {
                    await session.Output.WriteLineAsync($"switchover {resumed.Switchover?.Id} of {resumed.Name} resumed; follow it with `teal show {resumed.Name} --watch`");
                }

                return ExitCodes.Ok;
            }

            var request = new SwitchoverRequest(parse.GetValue(timeout), parse.GetValue(drain), parse.GetValue(threshold), parse.GetValue(dryRun)) { FenceWholeServer = parse.GetValue(wholeServer) };
            var path = $"/api/deployments/{Uri.EscapeDataString(parse.GetValue(id)!)}/switchover";
            var body = await api.SendAsync(HttpMethod.Post, path, request, ct);
            if (request.DryRun)
            {
                return await WritePlanAsync(session, parse, body, plan => $"switchover plan for {plan.Deployment} (timeout {plan.TimeoutSeconds} s):");
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

    /// <summary>A dry run's plan and guardrails (switchover or switchback); refused when a guardrail fails.</summary>
    private static async Task<int> WritePlanAsync(CliSession session, ParseResult parse, string body, Func<SwitchoverPlanView, string> title)
    {
        var plan = ApiClient.Parse<SwitchoverPlanView>(body);
        if (session.Json(parse))
        {
            session.WriteJson(body);
        }
        else
        {
            await session.Output.WriteLineAsync(title(plan));
            var n = 1;
            var width = plan.Steps.Select(s => s.Name.Length).DefaultIfEmpty(0).Max();
            foreach (var step in plan.Steps)
            {
                var marker = step.PointOfNoReturn ? "  ← point of no return" : string.Empty;
                await session.Output.WriteLineAsync($"  {n++,2}. {step.Name.PadRight(width)} {step.Description}{marker}");
            }

            await session.Output.WriteLineAsync();
            WriteReport(session, plan.Guardrails);
        }

        return plan.Guardrails.Passed ? ExitCodes.Ok : ExitCodes.Refused;
    }

    private static Command Switchback(CliSession session)
    {
        var id = new Argument<string>("ID") { Description = "Deployment id or name" };
        var timeout = TimeoutOption();
        var threshold = ThresholdOption();
        var drain = new Option<double?>("--drain-budget") { Description = "Seconds in-flight transactions get to finish before their sessions are closed (default 5)" };
        var dryRun = new Option<bool>("--dry-run") { Description = "Print the plan and the guardrails; change nothing" };
        var wait = new Option<bool>("--wait") { Description = "Follow the phases until the switchback completes or rolls back" };
        var wholeServer = WholeServerOption();
        var command = new Command("switchback", "Go back to the old blue after a switchover: the same guarded cutover in reverse, losing no write made on green")
        {
            id, timeout, drain, threshold, dryRun, wait, wholeServer,
        };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var request = new SwitchoverRequest(parse.GetValue(timeout), parse.GetValue(drain), parse.GetValue(threshold), parse.GetValue(dryRun)) { FenceWholeServer = parse.GetValue(wholeServer) };
            var body = await api.SendAsync(HttpMethod.Post, $"/api/deployments/{Uri.EscapeDataString(parse.GetValue(id)!)}/switchback", request, ct);
            if (request.DryRun)
            {
                return await WritePlanAsync(session, parse, body, plan => $"switchback plan for {plan.Deployment} (timeout {plan.TimeoutSeconds} s; blue is the side being left, green the old blue being reopened):");
            }

            var deployment = ApiClient.Parse<Deployment>(body);
            if (parse.GetValue(wait))
            {
                return await FollowAsync(session, parse, api, deployment, ct);
            }

            if (session.Json(parse))
            {
                session.WriteJson(body);
            }
            else
            {
                await session.Output.WriteLineAsync($"switchback {deployment.Switchover?.Id} of {deployment.Name} started; follow it with `teal show {deployment.Name} --watch`");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Finish(CliSession session)
    {
        var id = new Argument<string>("ID") { Description = "Deployment id or name" };
        var command = new Command("finish", "Keep green: remove reverse replication and Teal's objects from both sides; the old blue stays fenced until `teal instance unfence`") { id };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Post, $"/api/deployments/{Uri.EscapeDataString(parse.GetValue(id)!)}/finish", null, ct);
            if (session.Json(parse))
            {
                session.WriteJson(body);
            }
            else
            {
                var deployment = ApiClient.Parse<Deployment>(body);
                await session.Output.WriteLineAsync($"{deployment.Name} finished: {deployment.Green} stays production; {deployment.Blue} stays fenced until `teal instance unfence {deployment.Blue}`");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    /// <summary>Prints each phase as it starts, then the outcome; exit 1 when rolled back.</summary>
    private static async Task<int> FollowAsync(CliSession session, ParseResult parse, ApiClient api, Deployment deployment, CancellationToken ct)
    {
        string? lastPhase = null;
        // On a terminal the phases are redrawn in place as they complete; elsewhere each phase is a line.
        var live = false;
        deployment = await LiveView.RunAsync(session, session.Json(parse), async update =>
        {
            live = update is not null;
            while (true)
            {
                update?.Invoke(ProgressViews.Switchover(deployment.Name, deployment.Switchover));
                if (deployment.Status != DeploymentStatus.SwitchoverInProgress)
                {
                    return deployment;
                }

                var phase = deployment.Switchover?.Phase;
                if (update is null && phase != lastPhase && phase is not null && !session.Json(parse))
                {
                    await session.Output.WriteLineAsync($"  {phase}");
                    lastPhase = phase;
                }

                await Task.Delay(TimeSpan.FromMilliseconds(100), ct);
                deployment = ApiClient.Parse<Deployment>(await api.SendAsync(HttpMethod.Get, $"/api/deployments/{deployment.Id}", null, ct));
            }
        });

        if (session.Json(parse))
        {
            session.WriteJson(deployment);
        }
        else if (!live && deployment.Switchover is { } s)
        {
            var table = new Table("PHASE", "RESULT", "MS");
            foreach (var p in s.Phases)
            {
                table.Add(p.Step, p.Result, p.Milliseconds.ToString("0.0", System.Globalization.CultureInfo.InvariantCulture));
            }

            table.WriteTo(session.Output);
        }

        if (deployment.Switchover?.Outcome == SwitchoverOutcome.Completed)
        {
            if (!session.Json(parse))
            {
                var pause = deployment.Switchover?.WritePauseMilliseconds is { } ms ? $"; clients were held for {ms:0} ms" : string.Empty;
                var fenced = deployment.Reversed
                    ? $"fenced and applies green's writes (`teal switchback {deployment.Name}` goes back, `teal finish {deployment.Name}` ends it)"
                    : $"fenced until `teal instance unfence {deployment.Blue}`";
                await session.Output.WriteLineAsync(deployment.Status == DeploymentStatus.Available
                    ? $"switchback completed: {deployment.Blue} is the writer again, replicating to {deployment.Green}{pause}"
                    : $"switchover completed: {deployment.Green} is now the writer, old blue is {deployment.Blue} and {fenced}{pause}");
            }

            return ExitCodes.Ok;
        }

        if (deployment.Status == DeploymentStatus.SwitchoverStopped)
        {
            throw new CliException(
                $"switchover of {deployment.Name} stopped after the point of no return: {deployment.Switchover?.Reason ?? deployment.StatusReason}",
                deployment.Switchover?.Hint ?? $"fix the cause, then run `teal switchover {deployment.Name} --resume`");
        }

        throw new CliException(
            $"switchover of {deployment.Name} rolled back: {deployment.Switchover?.Reason ?? deployment.StatusReason}",
            $"'{deployment.Production}' is writable again; fix the cause (`teal check {deployment.Name}`) and run it again");
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
