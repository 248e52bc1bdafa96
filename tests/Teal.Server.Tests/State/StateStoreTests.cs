using Microsoft.Data.Sqlite;
using Npgsql;
using Teal.Core.Deployments;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Core.Instances;
using Teal.Core.State;
using Teal.Server.State;
using Teal.Testing;

namespace Teal.Server.Tests.State;

/// <summary>
/// What every state store guarantees, run against each: the embedded SQLite file and a
/// PostgreSQL database on a real server. A derived class says how to open its store again and
/// how to look at what it wrote.
/// </summary>
public abstract class StateStoreTests
{
    /// <summary>Opens the store (again, on the same location: a restart).</summary>
    protected abstract IStateStore NewStore();

    /// <summary>Sets the stored schema version as a newer Teal would have.</summary>
    protected abstract Task SetSchemaVersionAsync(int version);

    /// <summary>The deployment record exactly as stored.</summary>
    protected abstract Task<string> StoredDeploymentJsonAsync();

    [Fact]
    public async Task Open_NewerSchemaVersion_RefusesWithClearError()
    {
        Dispose(NewStore());
        await SetSchemaVersionAsync(999);

        var ex = Should.Throw<TealException>(() => Dispose(NewStore()));

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

        var json = await StoredDeploymentJsonAsync();

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
        Dispose(store);

        var reopened = NewStore();
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
                Events = [new NewEvent(deployment.Id, "switchover-completed", "switchover completed", new Dictionary<string, string>())],
            },
            default));

        (await store.GetInstanceAsync("prod", default)).ShouldNotBeNull();
        (await store.GetDeploymentAsync(deployment.Id, default))!.Status.ShouldBe(DeploymentStatus.Provisioning);
        (await store.ReadJournalAsync(deployment.Id, default)).ShouldBeEmpty();
        (await store.ListEventsAsync(deployment.Id, 0, 10, default)).ShouldBeEmpty();
    }

    [Fact]
    public async Task Apply_WithEvents_WritesThemWithTheChange_InOrder_AfterEarlierEvents()
    {
        var store = NewStore();
        var deployment = NewDeployment("orders");
        await store.AddDeploymentAsync(deployment, default);
        await store.AppendEventAsync(deployment.Id, "switchover-started", "started", null, default);

        await store.ApplyAsync(
            new StateChange
            {
                Deployments = [new DeploymentChange(deployment.Id, d => d with { Status = DeploymentStatus.SwitchoverCompleted })],
                Events =
                [
                    new NewEvent(deployment.Id, "positions", "green opened", new Dictionary<string, string> { ["greenPosition"] = "0/1" }),
                    new NewEvent(deployment.Id, "switchover-completed", "switchover completed", new Dictionary<string, string>()),
                ],
            },
            default);

        var events = await store.ListEventsAsync(deployment.Id, 0, 10, default);
        events.Select(e => e.Kind).ShouldBe(["switchover-started", "positions", "switchover-completed"]);
        events.Select(e => e.Seq).ShouldBeInOrder();
        events[1].Data["greenPosition"].ShouldBe("0/1");
        (await store.GetDeploymentAsync(deployment.Id, default))!.Status.ShouldBe(DeploymentStatus.SwitchoverCompleted);
    }

    [Fact]
    public async Task List_NamesInByteOrder_AsStoredRegardlessOfInsertOrder()
    {
        var store = NewStore();
        foreach (var name in new[] { "b-2", "B-1", "a_1", "a-1" })
        {
            await store.AddInstanceAsync(NewInstance(name), default);
        }

        // Byte order (as SQLite compares): uppercase before lowercase, '-' before '_'.
        (await store.ListInstancesAsync(default)).Select(i => i.Name).ShouldBe(["B-1", "a-1", "a_1", "b-2"]);
    }

    [Fact]
    public async Task AppendEvent_Concurrent_SeqsAreDistinctAndListedInOrder()
    {
        var store = NewStore();

        var appended = await Task.WhenAll(Enumerable.Range(0, 30).Select(i => Task.Run(() => store.AppendEventAsync(null, "k", $"m{i}", null, default))));

        var listed = await store.ListEventsAsync(null, 0, 100, default);
        listed.Select(e => e.Seq).ShouldBe(appended.Select(e => e.Seq).Order());
        listed.Select(e => e.Seq).Distinct().Count().ShouldBe(30);
    }

    protected static void Dispose(IStateStore store) => (store as IDisposable)?.Dispose();

    protected static Instance NewInstance(string name) =>
        new(name, EngineKind.Postgres) { Version = "15.18", Host = "127.0.0.1", Port = 5432, User = "postgres", Database = "app", SecretRef = "instance/abc" };

    protected static Deployment NewDeployment(string name) =>
        new(DeploymentId.New(), name, DeploymentStatus.Provisioning)
        {
            Blue = "prod",
            Green = "prod-green-1",
            Database = "app",
            Replication = new ReplicationStatus(ReplicationState.Syncing) { LagBytes = 42 },
            Tasks = [new DeploymentTask(DeploymentTaskKind.CopyData, DeploymentTaskStatus.InProgress)],
        };
}

public sealed class SqliteStateStoreTests : StateStoreTests
{
    private readonly string _dir = TestDirectories.NewDirectory("state");

    private string FilePath => Path.Combine(_dir, SqliteStateStore.FileName);

    [Fact]
    public async Task Open_EmptyDirectory_MigratesToCurrentVersionInWalMode()
    {
        var store = NewStore();

        await using var connection = new SqliteConnection($"Data Source={FilePath}");
        await connection.OpenAsync();
        StateSchema.ReadVersion(connection).ShouldBe(StateSchema.CurrentVersion);
        await using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA journal_mode";
        (await command.ExecuteScalarAsync()).ShouldBe("wal");
        (await store.ListInstancesAsync(default)).ShouldBeEmpty();
    }

    protected override IStateStore NewStore() => new SqliteStateStore(_dir, TimeProvider.System, new EventSignal());

    protected override async Task SetSchemaVersionAsync(int version)
    {
        await using var connection = new SqliteConnection($"Data Source={FilePath};Pooling=False");
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = $"UPDATE schema_version SET version = {version}";
        await command.ExecuteNonQueryAsync();
    }

    protected override async Task<string> StoredDeploymentJsonAsync()
    {
        await using var connection = new SqliteConnection($"Data Source={FilePath}");
        await connection.OpenAsync();
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT data FROM deployments";
        return (string)(await command.ExecuteScalarAsync())!;
    }
}

/// <summary>The same guarantees on a PostgreSQL state store: a fresh database per test on a real server.</summary>
public sealed class PostgresStateStoreTests(Postgres15Fixture fixture) : StateStoreTests, IClassFixture<Postgres15Fixture>, IAsyncLifetime
{
    private readonly string _database = "state_" + Guid.NewGuid().ToString("N")[..12];

    private PostgresServer Server => fixture.Server;

    public Task InitializeAsync() => Server.ExecuteAsync($"CREATE DATABASE {_database}");

    public Task DisposeAsync() => Task.CompletedTask;

    [Fact]
    public async Task Open_EmptyDatabase_MigratesToCurrentVersionInItsOwnSchema()
    {
        var store = NewStore();

        await using var connection = await Server.OpenAsync(_database);
        PostgresStateSchema.ReadVersion(connection).ShouldBe(PostgresStateSchema.CurrentVersion);
        (await ScalarAsync<long>("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'teal' AND table_name IN ('instances', 'deployments', 'endpoints', 'events', 'journal', 'secrets')")).ShouldBe(6);
        (await store.ListInstancesAsync(default)).ShouldBeEmpty();
    }

    [Fact]
    public async Task Open_TwoStoresAtOnce_MigrateOnce()
    {
        var stores = await Task.WhenAll(Enumerable.Range(0, 3).Select(_ => Task.Run(NewStore)));

        (await ScalarAsync<long>("SELECT count(*) FROM teal.schema_version")).ShouldBe(1);
        foreach (var store in stores)
        {
            Dispose(store);
        }
    }

    [Fact]
    public async Task Write_OnStandby_RefusedNamingTheLeader()
    {
        var store = (PostgresStateStore)NewStore();
        store.Fence = WriteFence.Standby("http://10.0.0.1:7400");

        var ex = await Should.ThrowAsync<TealException>(() => store.AddInstanceAsync(NewInstance("blue"), default));

        ex.Code.ShouldBe("server.not-leader");
        ex.Kind.ShouldBe(TealErrorKind.Unavailable);
        ex.Message.ShouldContain("http://10.0.0.1:7400");
        ex.Hint!.ShouldContain("--server http://10.0.0.1:7400");
        (await store.ListInstancesAsync(default)).ShouldBeEmpty();
    }

    [Fact]
    public async Task Write_AsLeader_PassesOnlyWhileTheLockSessionHoldsTheLock()
    {
        var store = (PostgresStateStore)NewStore();
        await using var session = store.NewSessionConnection("test-leader-lock");
        await session.OpenAsync();
        await using (var take = new NpgsqlCommand($"SELECT pg_advisory_lock({PostgresStateSchema.LockClass}, {PostgresStateSchema.LeaderLock})", session))
        {
            await take.ExecuteNonQueryAsync();
        }

        store.Fence = WriteFence.Leader(session.ProcessID);
        await store.AddInstanceAsync(NewInstance("blue"), default);

        // The lock session ends (as when the leader's connection breaks): its writes are refused by the database itself.
        var backend = session.ProcessID;
        await session.CloseAsync();
        // The server ends the backend (and frees its locks) a moment after the client leaves.
        for (var i = 0; i < 100 && await ScalarAsync<long>($"SELECT count(*) FROM pg_stat_activity WHERE pid = {backend}") > 0; i++)
        {
            await Task.Delay(50);
        }

        var ex = await Should.ThrowAsync<TealException>(() => store.AddInstanceAsync(NewInstance("green"), default));

        ex.Code.ShouldBe("server.no-leader");
        (await store.ListInstancesAsync(default)).Select(i => i.Name).ShouldBe(["blue"]);
    }

    [Fact]
    public async Task Connection_WrongPassword_ErrorNeverShowsThePassword()
    {
        var location = Server.Uri(_database).Replace(Uri.EscapeDataString(Server.Password), "not-the-password", StringComparison.Ordinal);

        var ex = Should.Throw<TealException>(() => new PostgresStateStore(location, null, TimeProvider.System, new EventSignal()));

        ex.Code.ShouldBe("connection.authentication-failed");
        ex.ToString().ShouldNotContain("not-the-password");
    }

    protected override IStateStore NewStore() => new PostgresStateStore(Server.Uri(_database), null, TimeProvider.System, new EventSignal());

    protected override async Task SetSchemaVersionAsync(int version) => await Server.ExecuteAsync($"UPDATE teal.schema_version SET version = {version}", _database);

    protected override Task<string> StoredDeploymentJsonAsync() => ScalarAsync<string>("SELECT data::text FROM teal.deployments");

    private Task<T> ScalarAsync<T>(string sql) => Server.ScalarAsync<T>(sql, _database);
}
