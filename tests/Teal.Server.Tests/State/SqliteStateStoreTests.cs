using Microsoft.Data.Sqlite;
using Teal.Core.Deployments;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Core.Instances;
using Teal.Core.State;
using Teal.Server.State;
using Teal.Testing;

namespace Teal.Server.Tests.State;

public sealed class SqliteStateStoreTests
{
    private readonly string _dir = TestDirectories.NewDirectory("state");

    [Fact]
    public async Task Open_EmptyDirectory_MigratesToCurrentVersionInWalMode()
    {
        var store = NewStore();

        await using var connection = new SqliteConnection($"Data Source={store.Path}");
        await connection.OpenAsync();
        StateSchema.ReadVersion(connection).ShouldBe(StateSchema.CurrentVersion);
        await using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA journal_mode";
        (await command.ExecuteScalarAsync()).ShouldBe("wal");
        (await store.ListInstancesAsync(default)).ShouldBeEmpty();
    }

    [Fact]
    public async Task Open_NewerSchemaVersion_RefusesWithClearError()
    {
        NewStore();
        await using (var connection = new SqliteConnection($"Data Source={Path.Combine(_dir, SqliteStateStore.FileName)};Pooling=False"))
        {
            await connection.OpenAsync();
            await using var command = connection.CreateCommand();
            command.CommandText = "UPDATE schema_version SET version = 999";
            await command.ExecuteNonQueryAsync();
        }

        var ex = Should.Throw<TealException>(NewStore);

        ex.Code.ShouldBe("state.newer-schema");
        ex.Message.ShouldContain("999");
    }

    [Fact]
    public async Task Restart_KeepsInstancesDeploymentsEndpointsEventsAndJournal()
    {
        var store = NewStore();
        var deployment = NewDeployment("orders");
        await store.AddInstanceAsync(NewInstance("blue"), default);
        await store.AddDeploymentAsync(deployment, default);
        await store.AddEndpointAsync(new EndpointSpec("app", EndpointKind.Proxy, "blue") { Listen = "127.0.0.1:6432" }, default);
        await store.AppendEventAsync(deployment.Id, "created", "created", new Dictionary<string, string> { ["k"] = "v" }, default);
        await store.AppendJournalAsync(new JournalEntry(deployment.Id, "sw-1", "fence-blue", JournalAction.Started, DateTimeOffset.UtcNow), default);

        var reopened = NewStore();

        (await reopened.GetInstanceAsync("blue", default))!.Port.ShouldBe(5432);
        var read = (await reopened.FindDeploymentAsync("orders", default))!;
        read.Id.ShouldBe(deployment.Id);
        read.Tasks.Single().Kind.ShouldBe(DeploymentTaskKind.CopyData);
        read.Replication.LagBytes.ShouldBe(42);
        (await reopened.GetEndpointAsync("app", default))!.Listen.ShouldBe("127.0.0.1:6432");
        (await reopened.ListEventsAsync(deployment.Id, 0, 10, default)).Single().Data["k"].ShouldBe("v");
        var journal = await reopened.ReadJournalAsync(deployment.Id, default);
        journal.Single().Step.ShouldBe("fence-blue");
        journal.Single().Seq.ShouldBeGreaterThan(0);
    }

    [Fact]
    public async Task Records_AreStoredAsJsonWithEnumsAsStrings()
    {
        var store = NewStore();
        await store.AddDeploymentAsync(NewDeployment("orders"), default);

        await using var connection = new SqliteConnection($"Data Source={store.Path}");
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT data FROM deployments";
        var json = (string)(await command.ExecuteScalarAsync())!;

        json.ShouldContain("\"status\":\"PROVISIONING\"");
        json.ShouldContain("\"kind\":\"COPY_DATA\"");
        json.ShouldContain("\"lagBytes\":42");
    }

    [Fact]
    public async Task AddInstance_DuplicateName_IsConflict()
    {
        var store = NewStore();
        await store.AddInstanceAsync(NewInstance("blue"), default);

        var ex = await Should.ThrowAsync<TealException>(() => store.AddInstanceAsync(NewInstance("blue"), default));

        ex.Kind.ShouldBe(TealErrorKind.Conflict);
        ex.Code.ShouldBe("instance.duplicate-name");
    }

    [Fact]
    public async Task AddDeployment_DuplicateName_IsConflict()
    {
        var store = NewStore();
        await store.AddDeploymentAsync(NewDeployment("orders"), default);

        var ex = await Should.ThrowAsync<TealException>(() => store.AddDeploymentAsync(NewDeployment("orders"), default));

        ex.Kind.ShouldBe(TealErrorKind.Conflict);
        ex.Message.ShouldContain("a deployment named 'orders'");
    }

    [Fact]
    public async Task UpdateDeployment_Missing_IsNotFound()
    {
        var store = NewStore();

        var ex = await Should.ThrowAsync<TealException>(() => store.UpdateDeploymentAsync(NewDeployment("orders").Id, d => d with { StatusReason = "x" }, default));

        ex.Kind.ShouldBe(TealErrorKind.NotFound);
    }

    [Fact]
    public async Task UpdateDeployment_ConcurrentWriters_NoUpdateIsLost()
    {
        var store = NewStore();
        var deployment = NewDeployment("orders") with { StatusReason = string.Empty };
        await store.AddDeploymentAsync(deployment, default);

        // Each writer changes the record as stored: a read outside the write would lose some.
        await Task.WhenAll(Enumerable.Range(0, 20).Select(i => Task.Run(() => store.UpdateDeploymentAsync(deployment.Id, d => d with { StatusReason = d.StatusReason + "x" }, default))));

        (await store.GetDeploymentAsync(deployment.Id, default))!.StatusReason.ShouldBe(new string('x', 20));
    }

    [Fact]
    public async Task UpdateDeployment_ChangeThrows_NothingIsWritten()
    {
        var store = NewStore();
        var deployment = NewDeployment("orders");
        await store.AddDeploymentAsync(deployment, default);

        await Should.ThrowAsync<TealException>(() => store.UpdateDeploymentAsync(deployment.Id, _ => throw new TealException("test.refused", "no"), default));

        (await store.GetDeploymentAsync(deployment.Id, default))!.StatusReason.ShouldBe(deployment.StatusReason);
    }

    [Fact]
    public async Task AppendEvent_SeqIncreasesAndFiltersByDeployment()
    {
        var store = NewStore();
        var a = DeploymentId.New();
        var first = await store.AppendEventAsync(a, "created", "one", null, default);
        var second = await store.AppendEventAsync(null, "instance-added", "two", null, default);
        var third = await store.AppendEventAsync(a, "available", "three", null, default);

        second.Seq.ShouldBe(first.Seq + 1);
        third.Seq.ShouldBe(second.Seq + 1);
        (await store.ListEventsAsync(a, 0, 10, default)).Select(e => e.Message).ShouldBe(["one", "three"]);
        (await store.ListEventsAsync(null, first.Seq, 10, default)).Select(e => e.Message).ShouldBe(["two", "three"]);
        (await store.ListEventsAsync(null, 0, 1, default)).Count.ShouldBe(1);
    }

    [Fact]
    public async Task Apply_GreenTakesBlueName_BothRenamesLandTogether()
    {
        var store = NewStore();
        var deployment = NewDeployment("orders");
        await store.AddInstanceAsync(NewInstance("prod"), default);
        await store.AddInstanceAsync(NewInstance("prod-green-1") with { Port = 6000 }, default);
        await store.AddDeploymentAsync(deployment, default);

        // Green is listed first: the store must free "prod" before green takes it.
        await store.ApplyAsync(
            new StateChange
            {
                RenamedInstances = [("prod-green-1", NewInstance("prod") with { Port = 6000 }), ("prod", NewInstance("prod-old1"))],
                Deployments = [new DeploymentChange(deployment.Id, d => d with { Blue = "prod", Green = "prod-old1", Status = DeploymentStatus.SwitchoverCompleted })],
                Journal = [new JournalEntry(deployment.Id, "sw-1", "flip", JournalAction.Completed, DateTimeOffset.UtcNow)],
            },
            default);

        (await store.GetInstanceAsync("prod", default))!.Port.ShouldBe(6000);
        (await store.GetInstanceAsync("prod-old1", default))!.Port.ShouldBe(5432);
        (await store.GetInstanceAsync("prod-green-1", default)).ShouldBeNull();
        (await store.GetDeploymentAsync(deployment.Id, default))!.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted);
        (await store.ReadJournalAsync(deployment.Id, default)).Count.ShouldBe(1);
    }

    [Fact]
    public async Task Apply_NotDurable_IsCommittedForTheNextProcess_AndDurableWritesFollowIt()
    {
        var store = NewStore();
        var deployment = NewDeployment("orders");
        await store.AddDeploymentAsync(deployment, default);

        await store.ApplyAsync(
            new StateChange
            {
                Deployments = [new DeploymentChange(deployment.Id, d => d with { Status = DeploymentStatus.SwitchoverInProgress })],
                Journal = [new JournalEntry(deployment.Id, "sw-1", "catch-up", JournalAction.Started, DateTimeOffset.UtcNow)],
                Durable = false,
            },
            default);
        await store.ApplyAsync(new StateChange { Journal = [new JournalEntry(deployment.Id, "sw-1", "flip", JournalAction.Started, DateTimeOffset.UtcNow)] }, default);
        store.Dispose();

        using var reopened = NewStore();
        (await reopened.GetDeploymentAsync(deployment.Id, default))!.Status.ShouldBe(DeploymentStatus.SwitchoverInProgress);
        (await reopened.ReadJournalAsync(deployment.Id, default)).Select(e => e.Step).ShouldBe(["catch-up", "flip"]);
    }

    [Fact]
    public async Task Apply_OneChangeFails_NothingIsApplied()
    {
        var store = NewStore();
        var deployment = NewDeployment("orders");
        await store.AddInstanceAsync(NewInstance("prod"), default);
        await store.AddInstanceAsync(NewInstance("taken"), default);
        await store.AddDeploymentAsync(deployment, default);

        await Should.ThrowAsync<TealException>(() => store.ApplyAsync(
            new StateChange
            {
                RenamedInstances = [("prod", NewInstance("taken"))],
                Deployments = [new DeploymentChange(deployment.Id, d => d with { Status = DeploymentStatus.SwitchoverCompleted })],
                Journal = [new JournalEntry(deployment.Id, "sw-1", "flip", JournalAction.Completed, DateTimeOffset.UtcNow)],
            },
            default));

        (await store.GetInstanceAsync("prod", default)).ShouldNotBeNull();
        (await store.GetDeploymentAsync(deployment.Id, default))!.Status.ShouldBe(DeploymentStatus.Provisioning);
        (await store.ReadJournalAsync(deployment.Id, default)).ShouldBeEmpty();
    }

    private SqliteStateStore NewStore() => new(_dir, TimeProvider.System, new EventSignal());

    private static Instance NewInstance(string name) =>
        new(name, EngineKind.Postgres) { Version = "15.18", Host = "127.0.0.1", Port = 5432, User = "postgres", Database = "app", SecretRef = "instance/abc" };

    private static Deployment NewDeployment(string name) =>
        new(DeploymentId.New(), name, DeploymentStatus.Provisioning)
        {
            Blue = "prod",
            Green = "prod-green-1",
            Database = "app",
            Replication = new ReplicationStatus(ReplicationState.Syncing) { LagBytes = 42 },
            Tasks = [new DeploymentTask(DeploymentTaskKind.CopyData, DeploymentTaskStatus.InProgress)],
        };
}
