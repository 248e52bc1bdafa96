using Teal.Core.Instances;
using Teal.Core.Switchover.Steps;

namespace Teal.Core.Tests.Switchover;

/// <summary>How the flip renames readers: they follow their writer's new name, or all keep theirs on a clash.</summary>
public sealed class ReaderRenameTests
{
    [Fact]
    public void RenamedReaders_GreensReaders_TakeProductionsStemAndFollowIt()
    {
        var instances = new[] { Writer("app"), Writer("app-green-abc"), Reader("app-green-abc-r1", "app-green-abc"), Reader("app-green-abc-r2", "app-green-abc"), Reader("app-r1", "app"), Reader("replica7", "app") };

        var renamed = FlipStep.RenamedReaders(instances, "app", "app-green-abc", "app-old1");

        renamed.Select(r => (r.OldName, r.Instance.Name, r.Instance.ReaderOf)).OrderBy(r => r.OldName).ShouldBe(
        [
            ("app-green-abc-r1", "app-r1", "app"),
            ("app-green-abc-r2", "app-r2", "app"),
            // Blue's own readers follow the old blue: one named after it takes its new stem (freeing
            // app-r1 for green's), one named otherwise keeps its name.
            ("app-r1", "app-old1-r1", "app-old1"),
            ("replica7", "replica7", "app-old1"),
        ]);
    }

    [Fact]
    public void RenamedReaders_SwitchbackGivesTheNamesBack()
    {
        var instances = new[] { Writer("app"), Writer("app-old1"), Reader("app-r1", "app") };

        var renamed = FlipStep.RenamedReaders(instances, "app", "app-old1", "app-green-abc");

        renamed.Single().Instance.Name.ShouldBe("app-green-abc-r1");
        renamed.Single().Instance.ReaderOf.ShouldBe("app-green-abc");
    }

    [Fact]
    public void RenamedReaders_NewNameTaken_EveryReaderKeepsItsName()
    {
        var instances = new[] { Writer("app"), Writer("app-green-abc"), Reader("app-green-abc-r1", "app-green-abc"), Writer("app-r1") };

        var renamed = FlipStep.RenamedReaders(instances, "app", "app-green-abc", "app-old1");

        renamed.Single().Instance.Name.ShouldBe("app-green-abc-r1");
        renamed.Single().Instance.ReaderOf.ShouldBe("app");
    }

    private static Instance Writer(string name) => new(name, EngineKind.Postgres) { Version = "17.10", Host = "127.0.0.1", Port = 5432, User = "postgres", Database = "app" };

    private static Instance Reader(string name, string writer) => Writer(name) with { Role = InstanceRole.Reader, ReaderOf = writer };
}
