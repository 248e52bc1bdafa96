using Teal.Core.Errors;
using Teal.Core.Switchover;

namespace Teal.Core.Tests.Switchover;

public sealed class SwitchoverOptionsTests
{
    [Fact]
    public void Create_NoTimeout_DefaultsTo300Seconds()
    {
        SwitchoverOptions.Create(null).Timeout.ShouldBe(TimeSpan.FromSeconds(300));
    }

    [Theory]
    [InlineData(30)]
    [InlineData(3600)]
    public void Create_TimeoutAtTheLimits_IsAccepted(int seconds)
    {
        SwitchoverOptions.Create(seconds).Timeout.ShouldBe(TimeSpan.FromSeconds(seconds));
    }

    [Theory]
    [InlineData(29)]
    [InlineData(3601)]
    [InlineData(0)]
    [InlineData(-5)]
    public void Create_TimeoutOutOfRange_IsRefusedNamingTheRange(int seconds)
    {
        var ex = Should.Throw<TealException>(() => SwitchoverOptions.Create(seconds));
        ex.Code.ShouldBe("switchover.invalid-timeout");
        ex.Message.ShouldContain(seconds.ToString(System.Globalization.CultureInfo.InvariantCulture));
        ex.Hint!.ShouldContain("30–3600");
    }

    [Fact]
    public void Create_DrainBudgetNotBelowTheTimeout_IsRefused()
    {
        Should.Throw<TealException>(() => SwitchoverOptions.Create(30, drainBudgetSeconds: 30)).Code.ShouldBe("switchover.invalid-drain-budget");
    }

    [Fact]
    public void Plan_NamesExactlyOnePointOfNoReturn_TheFlip()
    {
        var plan = SwitchoverPlan.Forward();
        plan.Where(s => s.IsPointOfNoReturn).Select(s => s.Name).ShouldBe(["flip"]);
        // Green opens only after the flip, and blue is fenced before the final position is read.
        var names = plan.Select(s => s.Name).ToList();
        names.IndexOf("open-green").ShouldBeGreaterThan(names.IndexOf("flip"));
        names.IndexOf("fence-blue").ShouldBeLessThan(names.IndexOf("catch-up"));
        names.IndexOf("drain-endpoints").ShouldBeLessThan(names.IndexOf("fence-blue"));
    }

    [Fact]
    public void Plan_StepsThatChangeBlueOrTheEndpoints_AreFlushedToDiskBeforeTheyAct()
    {
        // Recovery after a power failure must know these started: pausing (PgBouncer stays
        // paused), fencing (blue stays read-only) and the flip (roll forward, never back).
        var plan = SwitchoverPlan.Forward();
        plan.Where(s => !s.NothingToUndo).Select(s => s.Name).ShouldBe(
            ["prepare-reverse-replication", "pause-endpoints", "fence-blue", "flip", "open-green", "resume-endpoints", "stop-replication", "start-reverse-replication"]);
        plan.Where(s => s.UndoReopensBlue).ShouldAllBe(s => !s.NothingToUndo);
    }

    [Fact]
    public void Plan_StepsThatRunTogether_AreSequencesWithCatchUpAndOpenGreenWithTheFlip()
    {
        // Green opens together with the flip, journaled in the flip's flushed commit: after the
        // point of no return, never before it. Nothing that changes blue runs alongside anything.
        var plan = SwitchoverPlan.Forward();
        var pairs = plan.Select((s, i) => (Step: s, Previous: i > 0 ? plan[i - 1] : null)).Where(p => p.Step.RunsWithPrevious).ToList();
        pairs.Select(p => $"{p.Previous!.Name}+{p.Step.Name}").ShouldBe(["catch-up+sync-sequences", "flip+open-green"]);
        pairs.ShouldAllBe(p => !p.Step.IsPointOfNoReturn && !p.Step.UndoReopensBlue);
    }
}
