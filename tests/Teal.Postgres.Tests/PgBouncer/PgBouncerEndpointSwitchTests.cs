using Npgsql;
using Teal.Core.Endpoints;
using Teal.Postgres.PgBouncer;
using Teal.Postgres.Wire;
using Teal.Testing;

namespace Teal.Postgres.Tests.PgBouncer;

/// <summary>
/// A real PgBouncer in transaction pooling in front of PostgreSQL 15 (blue), moved to
/// PostgreSQL 17 (green) the way a switchover does: pause, flip, resume.
/// </summary>
public sealed class PgBouncerEndpointSwitchTests(BlueGreenFixture servers) : IClassFixture<BlueGreenFixture>
{
    private static readonly TimeSpan HoldDeadline = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task PauseFlipResume_HeldQueriesCompleteOnGreen()
    {
        await using var bouncer = await StartAsync();
        var logger = new ListLogger();
        await using var endpoint = Endpoint(bouncer, logger);
        await using var existing = await bouncer.OpenAsync();
        (await ServerVersionAsync(existing)).ShouldStartWith("15");

        await endpoint.PauseAsync(HoldDeadline, CancellationToken.None);
        endpoint.Paused.ShouldBeTrue();
        var heldOnExisting = ServerVersionAsync(existing);
        var heldOnNew = Task.Run(async () =>
        {
            await using var fresh = await bouncer.OpenAsync();
            return await ServerVersionAsync(fresh);
        });
        await Task.Delay(500);
        heldOnExisting.IsCompleted.ShouldBeFalse("a query sent during the pause must be held, not answered or refused");
        heldOnNew.IsCompleted.ShouldBeFalse();
        (await endpoint.RefreshStatsAsync(CancellationToken.None)).Held.ShouldBeGreaterThanOrEqualTo(1);

        await endpoint.FlipAsync(GreenTarget(), CancellationToken.None);
        endpoint.Target.Instance.ShouldBe("green");
        heldOnExisting.IsCompleted.ShouldBeFalse("the flip must not release held queries");
        await endpoint.ResumeAsync(CancellationToken.None);

        (await heldOnExisting.WaitAsync(TimeSpan.FromSeconds(10))).ShouldStartWith("17");
        (await heldOnNew.WaitAsync(TimeSpan.FromSeconds(10))).ShouldStartWith("17");
        endpoint.Paused.ShouldBeFalse();
        logger.Lines.ShouldAllBe(line => !line.Contains(bouncer.AdminPassword));
        logger.Lines.ShouldContain(line => line.Contains("query_wait_timeout"));
        endpoint.HeldClientTimeout.ShouldBe(TimeSpan.FromSeconds(120));
    }

    [Fact]
    public async Task Prepare_ReadsTheSettingsBeforeAnyoneIsHeld_ThenPauseHolds()
    {
        await using var bouncer = await StartAsync();
        var logger = new ListLogger();
        await using var endpoint = Endpoint(bouncer, logger);

        // A hold deadline longer than PgBouncer's query_wait_timeout (120 s): the warning comes at prepare.
        await endpoint.PrepareAsync(TimeSpan.FromMinutes(5), CancellationToken.None);

        endpoint.HeldClientTimeout.ShouldBe(TimeSpan.FromSeconds(120));
        logger.Lines.ShouldContain(line => line.Contains("query_wait_timeout"));
        endpoint.Paused.ShouldBeFalse();
        (await ShowDatabaseAsync(bouncer))["paused"].ShouldBe("0", "preparing holds no client");

        await endpoint.PauseAsync(HoldDeadline, CancellationToken.None);
        (await ShowDatabaseAsync(bouncer))["paused"].ShouldBe("1");
        await endpoint.ResumeAsync(CancellationToken.None);
        (await ShowDatabaseAsync(bouncer))["paused"].ShouldBe("0");
    }

    [Fact]
    public async Task Prepare_EntryPgBouncerDoesNotServe_IsRefusedBeforeAnyoneIsHeld()
    {
        await using var bouncer = await StartAsync();
        var ini = await File.ReadAllTextAsync(bouncer.ConfigFile);
        await File.WriteAllTextAsync(bouncer.ConfigFile, ini.Replace("[databases]\n", "[databases]\nlater = host=127.0.0.1 port=1 dbname=x\n", StringComparison.Ordinal));
        await using var endpoint = new PgBouncerEndpoint("app", bouncer.Spec with { Database = "later" }, BlueTarget(), bouncer.AdminPassword, new ListLogger());

        var error = await Should.ThrowAsync<Teal.Core.Errors.TealException>(() => endpoint.PrepareAsync(HoldDeadline, CancellationToken.None));

        error.Code.ShouldBe("endpoint.pgbouncer-database-unknown");
        endpoint.Paused.ShouldBeFalse();
        endpoint.Stats.Errors.ShouldBe(1);
    }

    [Fact]
    public async Task Pause_TransactionInFlight_CompletesBeforePauseReturns()
    {
        await using var bouncer = await StartAsync();
        await using var endpoint = Endpoint(bouncer, new ListLogger());
        var table = "inflight_" + Guid.NewGuid().ToString("N")[..8];
        await servers.Blue.ExecuteAsync($"CREATE TABLE {table} (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())");
        await using var client = await bouncer.OpenAsync();
        await using var transaction = await client.BeginTransactionAsync();
        await Execute(client, $"INSERT INTO {table} (id) VALUES (1)");

        var pause = endpoint.PauseAsync(HoldDeadline, CancellationToken.None);
        await Task.Delay(500);
        pause.IsCompleted.ShouldBeFalse("PAUSE must wait for the transaction in flight");
        await Execute(client, $"INSERT INTO {table} (id) VALUES (2)");
        var committing = DateTimeOffset.UtcNow;
        await transaction.CommitAsync();
        await pause.WaitAsync(TimeSpan.FromSeconds(10));
        var paused = DateTimeOffset.UtcNow;

        (await servers.Blue.ScalarAsync<long>($"SELECT count(*) FROM {table}")).ShouldBe(2);
        paused.ShouldBeGreaterThanOrEqualTo(committing);
        await endpoint.ResumeAsync(CancellationToken.None);
    }

    [Fact]
    public async Task Pause_Cancelled_LeavesTheDatabaseServing()
    {
        await using var bouncer = await StartAsync();
        await using var endpoint = Endpoint(bouncer, new ListLogger());
        await using var busy = await bouncer.OpenAsync();
        await using (var transaction = await busy.BeginTransactionAsync())
        {
            await Execute(busy, "SELECT 1");
            using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));

            await Should.ThrowAsync<OperationCanceledException>(() => endpoint.PauseAsync(HoldDeadline, cancel.Token));

            endpoint.Paused.ShouldBeFalse();
            await using var other = await bouncer.OpenAsync();
            (await ServerVersionAsync(other).WaitAsync(TimeSpan.FromSeconds(5))).ShouldStartWith("15");
            await transaction.CommitAsync();
        }

        var live = await ShowDatabaseAsync(bouncer);
        live["paused"].ShouldBe("0");
    }

    [Fact]
    public async Task Flip_RewritesOnlyTheEntryLine_AndPgBouncerFollows()
    {
        await using var bouncer = await StartAsync();
        await using var endpoint = Endpoint(bouncer, new ListLogger());
        var before = await File.ReadAllLinesAsync(bouncer.ConfigFile);
        var modeBefore = File.GetUnixFileMode(bouncer.ConfigFile);

        await endpoint.FlipAsync(GreenTarget(), CancellationToken.None);

        var after = await File.ReadAllLinesAsync(bouncer.ConfigFile);
        after.Length.ShouldBe(before.Length);
        var changed = Enumerable.Range(0, before.Length).Where(i => before[i] != after[i]).ToList();
        changed.Count.ShouldBe(1);
        before[changed[0]].ShouldBe(PgBouncerServer.EntryLine(PgBouncerServer.Database, servers.Blue, "postgres"));
        after[changed[0]].ShouldBe(PgBouncerServer.EntryLine(PgBouncerServer.Database, servers.Green, "postgres"));
        File.GetUnixFileMode(bouncer.ConfigFile).ShouldBe(modeBefore);
        (await ShowDatabaseAsync(bouncer))["port"].ShouldBe(servers.Green.Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        await using var client = await bouncer.OpenAsync();
        (await ServerVersionAsync(client)).ShouldStartWith("17");
    }

    [Fact]
    public async Task Flip_PgBouncerDoesNotFollowTheFile_RestoresItAndRefuses()
    {
        await using var bouncer = await StartAsync();
        // The operator named a copy of the ini, not the file PgBouncer reads: RELOAD says OK and
        // changes nothing, which only SHOW DATABASES reveals.
        var copy = Path.Combine(bouncer.Directory, "copy.ini");
        File.Copy(bouncer.ConfigFile, copy);
        var before = await File.ReadAllBytesAsync(copy);
        var logger = new ListLogger();
        await using var endpoint = new PgBouncerEndpoint("app", bouncer.Spec with { ConfigFile = copy }, BlueTarget(), bouncer.AdminPassword, logger);

        var error = await Should.ThrowAsync<Teal.Core.Errors.TealException>(() => endpoint.FlipAsync(GreenTarget(), CancellationToken.None));

        error.Code.ShouldBe("endpoint.pgbouncer-reload-not-applied");
        error.Message.ShouldContain(servers.Blue.Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        (await File.ReadAllBytesAsync(copy)).ShouldBe(before);
        endpoint.Target.Instance.ShouldBe("blue");
        endpoint.Stats.Errors.ShouldBe(1);
        await using var client = await bouncer.OpenAsync();
        (await ServerVersionAsync(client)).ShouldStartWith("15");
    }

    [Fact]
    public async Task PauseAndResume_Repeated_AreIdempotent()
    {
        // A switchover resumed from its journal may repeat a step that already ran.
        await using var bouncer = await StartAsync();
        await using var endpoint = Endpoint(bouncer, new ListLogger());

        await endpoint.ResumeAsync(CancellationToken.None);
        await endpoint.PauseAsync(HoldDeadline, CancellationToken.None);
        await endpoint.PauseAsync(HoldDeadline, CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        (await ShowDatabaseAsync(bouncer))["paused"].ShouldBe("1");
        await endpoint.ResumeAsync(CancellationToken.None);
        await endpoint.ResumeAsync(CancellationToken.None);

        (await ShowDatabaseAsync(bouncer))["paused"].ShouldBe("0");
        endpoint.Stats.Errors.ShouldBe(0);
        await using var client = await bouncer.OpenAsync();
        (await ServerVersionAsync(client).WaitAsync(TimeSpan.FromSeconds(5))).ShouldStartWith("15");
    }

    [Fact]
    public async Task Flip_ToWhereItAlreadyPoints_LeavesTheFileUntouched()
    {
        await using var bouncer = await StartAsync();
        await using var endpoint = Endpoint(bouncer, new ListLogger());
        var before = File.GetLastWriteTimeUtc(bouncer.ConfigFile);
        var content = await File.ReadAllBytesAsync(bouncer.ConfigFile);

        await endpoint.FlipAsync(BlueTarget(), CancellationToken.None);

        File.GetLastWriteTimeUtc(bouncer.ConfigFile).ShouldBe(before);
        (await File.ReadAllBytesAsync(bouncer.ConfigFile)).ShouldBe(content);
    }

    [Fact]
    public async Task Drain_AfterPauseInTransactionPooling_FindsNothingOpen()
    {
        await using var bouncer = await StartAsync();
        await using var endpoint = Endpoint(bouncer, new ListLogger());
        await using (var client = await bouncer.OpenAsync())
        {
            await ServerVersionAsync(client);
        }

        await endpoint.PauseAsync(HoldDeadline, CancellationToken.None);
        var drained = await endpoint.DrainAsync(TimeSpan.FromSeconds(2), CancellationToken.None);

        drained.ClosedAtDeadline.ShouldBe(0);
        (await ShowServersAsync(bouncer)).ShouldBe(0);
        await endpoint.ResumeAsync(CancellationToken.None);
    }

    [Fact]
    public async Task Drain_SessionPoolingClientStillConnected_ReportsItWhenTheBudgetEnds()
    {
        await using var bouncer = await PgBouncerServer.StartAsync(servers.Blue, new PgBouncerServerOptions { PoolMode = "session" });
        var logger = new ListLogger();
        await using var endpoint = Endpoint(bouncer, logger);
        await using var session = await bouncer.OpenAsync();
        await ServerVersionAsync(session);

        var drained = await endpoint.DrainAsync(TimeSpan.FromMilliseconds(300), CancellationToken.None);

        drained.ShouldBe(new EndpointDrainResult(0, 0));
        logger.Lines.ShouldContain(line => line.Contains("1 server connection(s)") && line.Contains("still open"));
    }

    [Fact]
    public async Task Stats_MoveUnderLoad()
    {
        await using var bouncer = await StartAsync();
        await using var endpoint = Endpoint(bouncer, new ListLogger());
        var before = await endpoint.RefreshStatsAsync(CancellationToken.None);

        await using (var client = await bouncer.OpenAsync())
        {
            for (var i = 0; i < 50; i++)
            {
                await Execute(client, "SELECT repeat('x', 1000)");
            }
        }

        var after = await endpoint.RefreshStatsAsync(CancellationToken.None);
        (after.Total - before.Total).ShouldBeGreaterThanOrEqualTo(50);
        (after.BytesToClients - before.BytesToClients).ShouldBeGreaterThan(50 * 1000);
        (after.BytesFromClients - before.BytesFromClients).ShouldBeGreaterThan(0);
        endpoint.Stats.ShouldBe(after);
    }

    [Fact]
    public async Task Stats_Read_RefreshFromPgBouncerInTheBackground()
    {
        await using var bouncer = await StartAsync();
        await using var endpoint = Endpoint(bouncer, new ListLogger());
        await using (var client = await bouncer.OpenAsync())
        {
            for (var i = 0; i < 20; i++)
            {
                await Execute(client, "SELECT 1");
            }
        }

        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (endpoint.Stats.Total < 20 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        endpoint.Stats.Total.ShouldBeGreaterThanOrEqualTo(20);
    }

    [Fact]
    public async Task FiftyClientsLooping_ThroughPauseFlipResume_SeeNoErrors()
    {
        await using var bouncer = await StartAsync();
        await using var endpoint = Endpoint(bouncer, new ListLogger());
        var table = "hits_" + Guid.NewGuid().ToString("N")[..8];
        var ddl = $"CREATE TABLE {table} (id bigserial PRIMARY KEY, client int NOT NULL)";
        await servers.Blue.ExecuteAsync(ddl);
        await servers.Green.ExecuteAsync(ddl);
        await using var dataSource = NpgsqlDataSource.Create(bouncer.ConnectionString(pooling: true, maxPoolSize: 60));
        using var stop = new CancellationTokenSource();
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var onGreen = 0L;
        var total = 0L;

        var clients = Enumerable.Range(0, 50).Select(c => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    await using var connection = await dataSource.OpenConnectionAsync();
                    await using var command = new NpgsqlCommand($"INSERT INTO {table} (client) VALUES ({c}) RETURNING current_setting('server_version_num')", connection);
                    var version = (string)(await command.ExecuteScalarAsync())!;
                    Interlocked.Increment(ref total);
                    if (version.StartsWith("17", StringComparison.Ordinal))
                    {
                        Interlocked.Increment(ref onGreen);
                    }
                }
                catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException or TimeoutException)
                {
                    errors.Enqueue(ex.Message);
                }
            }
        })).ToList();

        await Task.Delay(1000);
        await endpoint.PauseAsync(HoldDeadline, CancellationToken.None);
        await endpoint.FlipAsync(GreenTarget(), CancellationToken.None);
        await endpoint.ResumeAsync(CancellationToken.None);
        var afterResume = Interlocked.Read(ref total);
        await Task.Delay(1000);
        await stop.CancelAsync();
        await Task.WhenAll(clients).WaitAsync(TimeSpan.FromSeconds(30));

        errors.ShouldBeEmpty();
        Interlocked.Read(ref total).ShouldBeGreaterThan(afterResume);
        Interlocked.Read(ref onGreen).ShouldBeGreaterThan(0);
        var acknowledged = Interlocked.Read(ref total);
        var stored = await servers.Blue.ScalarAsync<long>($"SELECT count(*) FROM {table}") + await servers.Green.ScalarAsync<long>($"SELECT count(*) FROM {table}");
        stored.ShouldBe(acknowledged);
        (await servers.Green.ScalarAsync<long>($"SELECT count(*) FROM {table}")).ShouldBe(Interlocked.Read(ref onGreen));
    }

    private async Task<PgBouncerServer> StartAsync()
    {
        var bouncer = await PgBouncerServer.StartAsync(servers.Blue);
        try
        {
            await bouncer.GrantAccessAsync(servers.Green);
            return bouncer;
        }
        catch
        {
            await bouncer.DisposeAsync();
            throw;
        }
    }

    private PgBouncerEndpoint Endpoint(PgBouncerServer bouncer, ListLogger logger) =>
        new("app", bouncer.Spec, BlueTarget(), bouncer.AdminPassword, logger);

    private EndpointTarget BlueTarget() => new("blue", servers.Blue.Host, servers.Blue.Port, "postgres");

    private EndpointTarget GreenTarget() => new("green", servers.Green.Host, servers.Green.Port, "postgres");

    private static async Task<string> ServerVersionAsync(NpgsqlConnection connection)
    {
        await using var command = new NpgsqlCommand("SHOW server_version_num", connection);
        return (string)(await command.ExecuteScalarAsync())!;
    }

    private static async Task Execute(NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    private static async Task<SimpleQueryConnection> ConsoleAsync(PgBouncerServer bouncer) =>
        await SimpleQueryConnection.OpenAsync(
            new WireConnectOptions(bouncer.Host, bouncer.Port, PgBouncerServer.AdminUser, "pgbouncer") { Password = bouncer.AdminPassword },
            CancellationToken.None);

    private static async Task<QueryRow> ShowDatabaseAsync(PgBouncerServer bouncer)
    {
        await using var console = await ConsoleAsync(bouncer);
        return (await console.QueryAsync("SHOW DATABASES", CancellationToken.None)).NamedRows().Single(r => r["name"] == PgBouncerServer.Database);
    }

    private static async Task<int> ShowServersAsync(PgBouncerServer bouncer)
    {
        await using var console = await ConsoleAsync(bouncer);
        return (await console.QueryAsync("SHOW SERVERS", CancellationToken.None)).NamedRows().Count(r => r["database"] == PgBouncerServer.Database);
    }
}
