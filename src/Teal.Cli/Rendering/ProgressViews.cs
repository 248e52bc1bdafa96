using System.Globalization;
using Spectre.Console;
using Spectre.Console.Rendering;
using Teal.Core.Deployments;
using Teal.Core.Switchover;

namespace Teal.Cli.Rendering;

/// <summary>What the live displays draw: a deployment's tasks and lag, and a switchover's phases.</summary>
internal static class ProgressViews
{
    private const int BarWidth = 24;

    /// <summary>Create tasks with progress bars, then the replication line.</summary>
    public static IRenderable Tasks(Deployment deployment)
    {
        ArgumentNullException.ThrowIfNull(deployment);
        var table = new Spectre.Console.Table().Border(TableBorder.Rounded).Title($"{deployment.Name}: blue {deployment.Blue} → green {deployment.Green}");
        table.AddColumns("TASK", "STATUS", "PROGRESS", "MESSAGE");
        foreach (var task in deployment.Tasks)
        {
            var percent = task.Status == DeploymentTaskStatus.Completed ? 100 : task.Percent;
            table.AddRow(
                new Text(TaskNames.Of(task.Kind)),
                new Markup(Status(task.Status)),
                new Text(Bar(percent)),
                new Text(task.Message ?? string.Empty));
        }

        var r = deployment.Replication;
        var footer = new Text($"{Format.Name(deployment.Status)} · replication {Format.Name(r.State)} · lag {Format.Bytes(r.LagBytes)} / {Format.Seconds(r.LagSeconds)}");
        return new Rows(table, footer);
    }

    /// <summary>The switchover's steps as they complete, the running one last, and the write pause once known.</summary>
    public static IRenderable Switchover(string name, SwitchoverState? switchover)
    {
        var table = new Spectre.Console.Table().Border(TableBorder.Rounded).Title($"switchover of {name}");
        table.AddColumns("STEP", "RESULT", "TOOK");
        if (switchover is null)
        {
            return table;
        }

        foreach (var phase in switchover.Phases)
        {
            table.AddRow(new Text(phase.Step), new Markup(phase.Result == "done" ? "[green]done[/]" : $"[red]{Markup.Escape(phase.Result)}[/]"), new Text($"{phase.Milliseconds.ToString("0", CultureInfo.InvariantCulture)} ms"));
        }

        if (switchover.Outcome == SwitchoverOutcome.InProgress && switchover.Phase is { } running)
        {
            table.AddRow(new Text(running), new Markup("[blue]running…[/]"), new Text(string.Empty));
        }

        var pause = switchover.WritePauseMilliseconds is { } ms ? $" · write pause {ms.ToString("0", CultureInfo.InvariantCulture)} ms" : string.Empty;
        return new Rows(table, new Text($"{Format.Name(switchover.Outcome)}{pause}"));
    }

    /// <summary>A text bar (█ and ░), so it reads the same in any terminal font.</summary>
    public static string Bar(double? percent)
    {
        if (percent is not { } p)
        {
            return new string('░', BarWidth) + "    -";
        }

        var filled = (int)Math.Round(Math.Clamp(p, 0, 100) / 100 * BarWidth);
        return new string('█', filled) + new string('░', BarWidth - filled) + $" {p,3:0}%";
    }

    private static string Status(DeploymentTaskStatus status) => status switch
    {
        DeploymentTaskStatus.Completed => "[green]COMPLETED[/]",
        DeploymentTaskStatus.InProgress => "[blue]IN_PROGRESS[/]",
        DeploymentTaskStatus.Failed => "[red]FAILED[/]",
        _ => "PENDING",
    };
}
