using Spectre.Console;
using Spectre.Console.Rendering;
using Teal.Cli.Rendering;
using Teal.Core.Deployments;
using Teal.Core.Switchover;

namespace Teal.Cli.Tests.Rendering;

/// <summary>The live displays' frames, and that without a terminal nothing is drawn live.</summary>
public sealed class ProgressViewsTests
{
    [Fact]
    public void Tasks_ShowEachTaskWithABarAndTheLag()
    {
        var deployment = new Deployment(DeploymentId.New(), "upgrade", DeploymentStatus.Provisioning)
        {
            Blue = "app",
            Green = "app-green",
            Database = "app",
            Tasks =
            [
                new DeploymentTask(DeploymentTaskKind.CopySchema, DeploymentTaskStatus.Completed),
                new DeploymentTask(DeploymentTaskKind.CopyData, DeploymentTaskStatus.InProgress) { Percent = 50, Message = "2 of 4 tables copied" },
            ],
            Replication = new ReplicationStatus(ReplicationState.Syncing) { LagBytes = 2048, LagSeconds = 1.5 },
        };

        var text = Render(ProgressViews.Tasks(deployment));

        text.ShouldContain("COPY_SCHEMA");
        text.ShouldContain(new string('█', 24) + " 100%");
        text.ShouldContain(new string('█', 12) + new string('░', 12) + "  50%");
        text.ShouldContain("2 of 4 tables copied");
        text.ShouldContain("replication SYNCING");
    }

    [Fact]
    public void Switchover_ShowsStepsDoneTheRunningOneAndTheWritePause()
    {
        var running = new SwitchoverState("so-1", DateTimeOffset.UtcNow, 60)
        {
            Phase = "catch-up",
            Phases = [new PhaseTiming("guardrails", "done", 51), new PhaseTiming("pause-endpoints", "done", 12)],
        };

        var during = Render(ProgressViews.Switchover("upgrade", running));
        var after = Render(ProgressViews.Switchover("upgrade", running with { Outcome = SwitchoverOutcome.Completed, WritePauseMilliseconds = 240, Phases = [.. running.Phases, new PhaseTiming("catch-up", "done", 20)] }));

        during.ShouldContain("pause-endpoints");
        during.ShouldContain("running…");
        during.ShouldNotContain("write pause");
        after.ShouldNotContain("running…");
        after.ShouldContain("COMPLETED · write pause 240 ms");
    }

    [Fact]
    public async Task LiveView_WithoutATerminal_GivesNoUpdater_SoOutputStaysPlainLines()
    {
        using var output = new StringWriter();
        var session = new CliSession(TextReader.Null, output, TextWriter.Null, _ => null);

        var updater = await LiveView.RunAsync(session, json: false, update => Task.FromResult(update));

        updater.ShouldBeNull();
        output.ToString().ShouldBeEmpty();
    }

    private static string Render(IRenderable renderable)
    {
        using var writer = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors, Out = new AnsiConsoleOutput(writer), Interactive = InteractionSupport.No });
        console.Profile.Width = 160;
        console.Write(renderable);
        return writer.ToString();
    }
}
