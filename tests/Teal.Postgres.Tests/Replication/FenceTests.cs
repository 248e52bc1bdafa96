using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Postgres.Replication;
using Teal.Testing;

namespace Teal.Postgres.Tests.Replication;

/// <summary>
/// A replicated deployment whose blue has a superuser and an ordinary application role besides
/// the one Teal was registered with, and room for prepared transactions: what the fence tests
/// try to get past.
/// </summary>
public sealed class FencedDeploymentFixture : IAsyncLifetime
{
    public const string Database = "fenced";

    private readonly BlueGreenServers _servers = new FenceServers();
    private PostgresReplicationLink? _link;

    public string Name { get; } = LinkTestKit.NewName("teal");

    public PostgresServer Blue => _servers.Blue;

    public PostgresServer Green => _servers.Green;

    public PostgresReplicationLink Link => _link ?? throw new InvalidOperationException("the fixture has not started");

    public async Task InitializeAsync()
    {
        await _servers.InitializeAsync();
        await Blue.ExecuteAsync(
            """
            CREATE ROLE fence_su LOGIN SUPERUSER PASSWORD 'su-secret';
            CREATE ROLE fence_app LOGIN PASSWORD 'app-secret';
            CREATE ROLE fence_off NOLOGIN;
            """);
        await LinkTestKit.CreateDatabaseAsync(
            Blue,
            Database,
            """
            CREATE TABLE writes (id bigserial PRIMARY KEY, how text NOT NULL);
            CREATE FUNCTION fence_write(how text) RETURNS bigint LANGUAGE sql AS 'INSERT INTO writes (how) VALUES (how) RETURNING id';
            GRANT ALL ON writes, writes_id_seq TO fence_app;
            GRANT ALL ON DATABASE fenced TO fence_app;
            """);
        _link = LinkTestKit.Link(Blue, Green, Database, Name, new LinkSpec(Name, LinkTestKit.Connection(Blue, Database), LinkTestKit.Connection(Green, Database)) { CopyRoles = true });
        await LinkTestKit.StartAsync(_link);
    }

    public async Task DisposeAsync()
    {
        if (_link is not null)
        {
            await _link.DisposeAsync();
        }

        await _servers.DisposeAsync();
    }

    private sealed class FenceServers() : BlueGreenServers(new Dictionary<string, string> { ["max_prepared_transactions"] = "4" });
}

/// <summary>
/// The fence tried the way a determined client would (PRODUCT.md §6, issue 11): every way of
/// opting out of read-only, as a superuser and as an ordinary role, on a session connected
/// before the fence and on one connecting after. Nothing may commit on blue after the fence and
/// the drain, and whatever committed before reaches green.
/// </summary>
public sealed class FenceTests(FencedDeploymentFixture deployment) : IClassFixture<FencedDeploymentFixture>
{
    private const string Db = FencedDeploymentFixture.Database;

    /// <summary>Each way a client could try to write through a read-only default, as SQL or a COPY.</summary>
    private static readonly (string Name, Func<NpgsqlConnection, Task> Write)[] Bypasses =
    [
        ("begin-read-write", c => ExecAsync(c, "BEGIN READ WRITE; INSERT INTO writes (how) VALUES ('begin-read-write'); COMMIT")),
        ("set-default-off", c => ExecAsync(c, "SET default_transaction_read_only = off; INSERT INTO writes (how) VALUES ('set-default-off')")),
        ("session-characteristics", c => ExecAsync(c, "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; INSERT INTO writes (how) VALUES ('session-characteristics')")),
        ("role-setting", c => ExecAsync(c, "ALTER ROLE CURRENT_USER SET default_transaction_read_only = off; INSERT INTO writes (how) VALUES ('role-setting')")),
        ("database-setting", c => ExecAsync(c, $"ALTER DATABASE {Db} SET default_transaction_read_only = off; INSERT INTO writes (how) VALUES ('database-setting')")),
        ("replication-role", c => ExecAsync(c, "SET session_replication_role = replica; INSERT INTO writes (how) VALUES ('replication-role')")),
        ("prepared-transaction", c => ExecAsync(c, "BEGIN READ WRITE; INSERT INTO writes (how) VALUES ('prepared-transaction'); PREPARE TRANSACTION 'fence_bypass'; COMMIT PREPARED 'fence_bypass'")),
        ("function", c => ExecAsync(c, "SET default_transaction_read_only = off; SELECT fence_write('function')")),
        ("copy-from-stdin", async c =>
        {
            await ExecAsync(c, "SET default_transaction_read_only = off");
            await using var copy = await c.BeginTextImportAsync("COPY writes (how) FROM STDIN");
            await copy.WriteLineAsync("copy-from-stdin");
        }),
    ];

    [Theory]
    [InlineData("fence_su", "su-secret")]
    [InlineData("fence_app", "app-secret")]
    public async Task Fence_NoBypassCommitsAfterTheDrain_AndUnfenceRestoresExactlyTheLogins(string user, string password)
    {
        var loginsBefore = await LoginsAsync();
        // One session per bypass, connected before the fence, plus one mid-transaction that
        // commits during the drain budget (allowed: it commits before blue's final position).
        var before = new List<NpgsqlConnection>();
        foreach (var _ in Bypasses)
        {
            before.Add(await OpenAsync(user, password));
        }

        await using var inFlight = await OpenAsync(user, password);
        await ExecAsync(inFlight, "BEGIN READ WRITE; INSERT INTO writes (how) VALUES ('in-flight')");
        var rowsBefore = await CountAsync(deployment.Blue);
        try
        {
            await deployment.Link.FenceAsync(Side.Blue, default);
            var drain = deployment.Link.DrainAsync(Side.Blue, TimeSpan.FromMilliseconds(3000), default);
            // Give the drain time to see the open transaction before it commits.
            await Task.Delay(300);
            await ExecAsync(inFlight, "COMMIT");
            var drained = await drain;
            drained.FinishedInTime.ShouldBe(1);
            // Every session of the role was closed, idle ones included.
            drained.ClosedIdle.ShouldBeGreaterThanOrEqualTo(Bypasses.Length);

            for (var i = 0; i < Bypasses.Length; i++)
            {
                var (name, write) = Bypasses[i];
                (await TriesAsync(() => write(before[i]))).ShouldNotBeNull($"{name} on a session connected before the fence");
                var login = await TriesAsync(async () =>
                {
                    await using var after = await OpenAsync(user, password);
                    await write(after);
                });
                login.ShouldBeOfType<PostgresException>($"{name} on a session connecting after the fence").SqlState.ShouldBe(PostgresErrorCodes.InvalidAuthorizationSpecification);
            }

            // Nothing but the in-flight commit landed; and everything that landed is on green.
            var rowsAfter = await CountAsync(deployment.Blue);
            rowsAfter.ShouldBe(rowsBefore + 1);
            var final = await deployment.Link.MarkFinalPositionAsync(default);
            await deployment.Link.WaitForPositionAsync(final, default);
            (await CountAsync(deployment.Green)).ShouldBe(rowsAfter);
            (await CountAsync(deployment.Blue)).ShouldBe(rowsAfter);
        }
        finally
        {
            await deployment.Link.UnfenceAsync(Side.Blue, default);
            foreach (var session in before)
            {
                await session.DisposeAsync();
            }
        }

        (await LoginsAsync()).ShouldBe(loginsBefore);
        (await deployment.Blue.ScalarAsync<long>($"SELECT count(*) FROM pg_auth_members WHERE roleid = '{Fencing.LoginsRole}'::regrole")).ShouldBe(0);
        await using (var again = await OpenAsync(user, password))
        {
            await ExecAsync(again, "RESET ALL; ALTER ROLE CURRENT_USER RESET ALL");
        }

        await deployment.Blue.ExecuteAsync($"ALTER DATABASE {Db} RESET ALL");
    }

    [Fact]
    public async Task PreparedTransactionOnBlue_RefusesTheSwitchoverAndTheDrain_NamingItsGid()
    {
        await using var preparer = await OpenAsync("fence_app", "app-secret");
        await ExecAsync(preparer, "BEGIN; INSERT INTO writes (how) VALUES ('prepared'); PREPARE TRANSACTION 'fence_gid_7'");
        try
        {
            var report = await deployment.Link.CheckSwitchoverAsync(new SwitchoverGuardrailOptions(TimeSpan.FromSeconds(300)), default);
            report.Failures.Single(f => f.Name == "blue.prepared-transactions").Message.ShouldContain("fence_gid_7");

            await deployment.Link.FenceAsync(Side.Blue, default);
            try
            {
                var refused = await Should.ThrowAsync<TealException>(() => deployment.Link.DrainAsync(Side.Blue, TimeSpan.Zero, default));
                refused.Code.ShouldBe("fence.prepared-transactions");
                refused.Message.ShouldContain("fence_gid_7");
            }
            finally
            {
                await deployment.Link.UnfenceAsync(Side.Blue, default);
            }
        }
        finally
        {
            await deployment.Blue.ExecuteAsync("ROLLBACK PREPARED 'fence_gid_7'", Db);
        }

        (await deployment.Blue.ScalarAsync<long>("SELECT count(*) FROM writes WHERE how = 'prepared'", Db)).ShouldBe(0);
    }

    [Fact]
    public async Task RoleChangedByAnOpenTransaction_FenceRefusesWithinSeconds_NamingTheSession_AndTakesNothing()
    {
        var loginsBefore = await LoginsAsync();
        // A superuser's password change left uncommitted: fence_app's row waits for that transaction.
        await using var dba = await OpenAsync("fence_su", "su-secret");
        await ExecAsync(dba, "SET application_name = 'password-rotation'; BEGIN; ALTER ROLE fence_app PASSWORD 'app-secret'");
        var dbaPid = dba.ProcessID;
        try
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            // Without the cap the fence waits for that transaction: the test's own limit says so.
            var refused = await Should.ThrowAsync<TealException>(deployment.Link.FenceAsync(Side.Blue, default).WaitAsync(TimeSpan.FromSeconds(30)));

            refused.Code.ShouldBe("fence.role-locked");
            refused.Message.ShouldContain($"pid {dbaPid} (fence_su, password-rotation");
            refused.Message.ShouldContain("nothing was fenced");
            clock.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(15));
            // One transaction: no role lost LOGIN, no holder or record was left.
            (await LoginsAsync()).ShouldBe(loginsBefore);
            (await deployment.Blue.ScalarAsync<long>($"SELECT count(*) FROM pg_roles WHERE rolname = '{deployment.Name}_fence_blue'")).ShouldBe(0);
            (await CanLogInAsync("fence_app", "app-secret")).ShouldBeTrue();
            // The switchover's rollback undoes the fence while that transaction is still open: it
            // has nothing to give back, so it does not wait for the role either.
            await deployment.Link.UnfenceAsync(Side.Blue, default).WaitAsync(TimeSpan.FromSeconds(10));
        }
        finally
        {
            await ExecAsync(dba, "ROLLBACK");
            await deployment.Link.UnfenceAsync(Side.Blue, default);
        }

        // Once that transaction has ended, the fence goes through.
        await deployment.Link.FenceAsync(Side.Blue, default);
        await deployment.Link.UnfenceAsync(Side.Blue, default);
        (await LoginsAsync()).ShouldBe(loginsBefore);
    }

    /// <summary>
    /// The switchover prepares the fence while the endpoints drain (ISwitchoverStep.WorksAhead):
    /// nothing of it may reach a client before the fence itself, and the fence then takes the
    /// logins and sets the read-only default in one round trip.
    /// </summary>
    [Fact]
    public async Task PreparedFence_ChangesNothingAClientSees_TheFenceThenTakesLoginsAndTheDefault_UnfencePutsAllBack()
    {
        var loginsBefore = await LoginsAsync();
        // Connected before the override: a session keeps the override it started with until the drain ends it.
        await using var before = await OpenAsync("fence_app", "app-secret");
        await deployment.Blue.ExecuteAsync($"ALTER ROLE fence_app IN DATABASE {Db} SET default_transaction_read_only = off");
        try
        {
            await deployment.Link.PrepareFenceAsync(Side.Blue, default);

            // Prepared: the role's override is recorded and reset, the read-only default written
            // (not reloaded), and still every client logs in and writes.
            (await deployment.Blue.ScalarAsync<long>("SELECT count(*) FROM pg_db_role_setting WHERE 'default_transaction_read_only=off' = ANY (setconfig)")).ShouldBe(0);
            (await deployment.Blue.ScalarAsync<long>("SELECT count(*) FROM pg_file_settings WHERE name = 'default_transaction_read_only'")).ShouldBe(1);
            (await LoginsAsync()).ShouldBe(loginsBefore);
            (await TriesAsync(() => ExecAsync(before, "INSERT INTO writes (how) VALUES ('prepared, connected before')"))).ShouldBeNull();
            await using (var after = await OpenAsync("fence_app", "app-secret"))
            {
                (await TriesAsync(() => ExecAsync(after, "INSERT INTO writes (how) VALUES ('prepared, connected after')"))).ShouldBeNull();
            }

            await deployment.Link.FenceAsync(Side.Blue, default);

            (await CanLogInAsync("fence_app", "app-secret")).ShouldBeFalse();
            (await CanLogInAsync("fence_su", "su-secret")).ShouldBeFalse();
            // The default reached the session connected before (the fence waited for the reload to be seen).
            (await TriesAsync(() => ExecAsync(before, "INSERT INTO writes (how) VALUES ('fenced')"))).ShouldBeOfType<PostgresException>().SqlState.ShouldBe("25006");
        }
        finally
        {
            await deployment.Link.UnfenceAsync(Side.Blue, default);
        }

        (await LoginsAsync()).ShouldBe(loginsBefore);
        (await deployment.Blue.ScalarAsync<long>($"SELECT count(*) FROM pg_db_role_setting WHERE 'default_transaction_read_only=off' = ANY (setconfig)")).ShouldBe(1);
        (await deployment.Blue.ScalarAsync<long>("SELECT count(*) FROM pg_file_settings WHERE name = 'default_transaction_read_only'")).ShouldBe(0);
        await deployment.Blue.ExecuteAsync($"ALTER ROLE fence_app IN DATABASE {Db} RESET default_transaction_read_only");
    }

    [Fact]
    public async Task PreparedFence_RefusedByARoleLock_LeavesNothingOnceUndone_NotEvenTheDefaultItWroteFirst()
    {
        var loginsBefore = await LoginsAsync();
        await using var dba = await OpenAsync("fence_su", "su-secret");
        await ExecAsync(dba, "SET application_name = 'password-rotation'; BEGIN; ALTER ROLE fence_app PASSWORD 'app-secret'");
        try
        {
            await deployment.Link.PrepareFenceAsync(Side.Blue, default);
            var refused = await Should.ThrowAsync<TealException>(deployment.Link.FenceAsync(Side.Blue, default).WaitAsync(TimeSpan.FromSeconds(30)));

            refused.Code.ShouldBe("fence.role-locked");
            (await LoginsAsync()).ShouldBe(loginsBefore);
            // Written by the preparation, never reloaded: no session reads it.
            (await TriesAsync(() => ExecAsync(dba, "ROLLBACK; INSERT INTO writes (how) VALUES ('refused fence')"))).ShouldBeNull();
            // The switchover's rollback: the default goes too.
            await deployment.Link.UnfenceAsync(Side.Blue, default);
            (await deployment.Blue.ScalarAsync<long>("SELECT count(*) FROM pg_file_settings WHERE name = 'default_transaction_read_only'")).ShouldBe(0);
        }
        finally
        {
            await ExecAsync(dba, "ROLLBACK");
            await deployment.Link.UnfenceAsync(Side.Blue, default);
        }

        (await LoginsAsync()).ShouldBe(loginsBefore);
        (await CanLogInAsync("fence_app", "app-secret")).ShouldBeTrue();
    }

    [Fact]
    public async Task RoleChangedByAnOpenTransactionAfterTheFence_UnfenceRefusesWithinSeconds_NamingTheSession_AndLetsGoOfNothing()
    {
        var loginsBefore = await LoginsAsync();
        // A DBA's session from before the fence rotates a password and leaves it uncommitted:
        // the unfence's ALTER ROLE … LOGIN for that role waits for the transaction.
        await using var dba = await OpenAsync("fence_su", "su-secret");
        await ExecAsync(dba, "SET application_name = 'late-rotation'");
        await deployment.Link.FenceAsync(Side.Blue, default);
        try
        {
            await ExecAsync(dba, "BEGIN READ WRITE; ALTER ROLE fence_app PASSWORD 'app-secret'");
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var refused = await Should.ThrowAsync<TealException>(deployment.Link.UnfenceAsync(Side.Blue, default).WaitAsync(TimeSpan.FromSeconds(30)));

            refused.Code.ShouldBe("fence.role-locked");
            refused.Message.ShouldContain($"pid {dba.ProcessID} (fence_su, late-rotation");
            refused.Message.ShouldContain("the fence stays until it ends");
            clock.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(15));
            // One transaction: the holder is still there and no login came back.
            (await deployment.Blue.ScalarAsync<long>($"SELECT count(*) FROM pg_roles WHERE rolname = '{deployment.Name}_fence_blue'")).ShouldBe(1);
            (await CanLogInAsync("fence_app", "app-secret")).ShouldBeFalse();
        }
        finally
        {
            await ExecAsync(dba, "ROLLBACK");
            // Once that transaction has ended, the next attempt lets go.
            await deployment.Link.UnfenceAsync(Side.Blue, default);
        }

        (await LoginsAsync()).ShouldBe(loginsBefore);
        (await CanLogInAsync("fence_app", "app-secret")).ShouldBeTrue();
    }

    [Fact]
    public async Task LoginGivenBackWhileTheDrainEndsSessions_IsTakenAgainBeforeTheDrainReturns()
    {
        var loginsBefore = await LoginsAsync();
        // A superuser session gives LOGIN back after the fence, before it is itself terminated:
        // here, when the drain first waits between its looks (a login under way, stopped in its
        // password exchange, makes it look twice).
        var time = new ActAtFirstShortWait(() => deployment.Blue.ExecuteAsync("ALTER ROLE fence_app LOGIN"));
        await using var link = LinkTestKit.Link(deployment.Blue, deployment.Green, Db, LinkTestKit.NewName("teal"), time: time);
        await using var stopped = await StalledLogin.StartAsync(deployment.Blue.Host, deployment.Blue.Port, "fence_app", "app-secret", Db, StalledLogin.Stage.Challenged);
        await link.FenceAsync(Side.Blue, default);
        try
        {
            time.Armed = true;
            await link.DrainAsync(Side.Blue, TimeSpan.Zero, default);

            time.Armed.ShouldBeFalse("the drain waited between its looks, and LOGIN was given back then");
            (await CanLogInAsync("fence_app", "app-secret")).ShouldBeFalse("a role that had LOGIN back when the drain returned logs in to the fenced side");
        }
        finally
        {
            await link.UnfenceAsync(Side.Blue, default);
        }

        // The role given LOGIN back was recorded again: the unfence restores exactly the logins there were.
        (await LoginsAsync()).ShouldBe(loginsBefore);
    }

    [Fact]
    public async Task LoginGivenBackBetweenTheFenceAndTheDrain_IsTakenAgain_AndItsIdleSessionEnded()
    {
        var loginsBefore = await LoginsAsync();
        await using var idle = await OpenAsync("fence_app", "app-secret");
        await deployment.Link.FenceAsync(Side.Blue, default);
        try
        {
            // Nothing is in a transaction: the drain's first look rides with that question.
            await deployment.Blue.ExecuteAsync("ALTER ROLE fence_app LOGIN");

            var drained = await deployment.Link.DrainAsync(Side.Blue, TimeSpan.FromSeconds(5), default);

            drained.ClosedIdle.ShouldBeGreaterThanOrEqualTo(1);
            (await CanLogInAsync("fence_app", "app-secret")).ShouldBeFalse("the drain left a role with LOGIN given back after the fence");
            (await deployment.Blue.ScalarAsync<long>($"SELECT count(*) FROM pg_stat_activity WHERE pid = {idle.ProcessID}")).ShouldBe(0);
        }
        finally
        {
            await deployment.Link.UnfenceAsync(Side.Blue, default);
        }

        (await LoginsAsync()).ShouldBe(loginsBefore);
    }

    /// <summary>
    /// A client stopped in its password exchange when blue is fenced by NOLOGIN holds its startup
    /// transaction's lock with no pg_stat_activity entry yet, which the drain's look sees as a
    /// login under way: the drain looks twice then, as it always did, rather than waiting for it
    /// (PostgreSQL would give it authentication_timeout), and the client is refused when it goes
    /// on (rolcanlogin is read after the exchange).
    /// </summary>
    [Fact]
    public async Task LoginStoppedInItsPasswordExchange_DoesNotHoldTheDrain_AndIsRefusedWhenItGoesOn()
    {
        await using var challenged = await StalledLogin.StartAsync(deployment.Blue.Host, deployment.Blue.Port, "fence_app", "app-secret", Db, StalledLogin.Stage.Challenged);
        await deployment.Link.FenceAsync(Side.Blue, default);
        try
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            await deployment.Link.DrainAsync(Side.Blue, TimeSpan.Zero, default);

            clock.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(5), "the drain waited for a login stopped in its password exchange");
            (await challenged.FinishAsync("BEGIN READ WRITE; INSERT INTO writes (how) VALUES ('stopped login'); COMMIT")).ShouldNotBeNull("the stopped login got in to fenced blue");
        }
        finally
        {
            await deployment.Link.UnfenceAsync(Side.Blue, default);
        }

        (await deployment.Blue.ScalarAsync<long>("SELECT count(*) FROM writes WHERE how = 'stopped login'", Db)).ShouldBe(0);
    }

    /// <summary>The system clock, which runs an action (once armed) when the fence's code first asks for a 2 ms wait.</summary>
    private sealed class ActAtFirstShortWait(Func<Task> action) : TimeProvider
    {
        private int _armed;

        public bool Armed
        {
            get => Volatile.Read(ref _armed) == 1;
            set => Volatile.Write(ref _armed, value ? 1 : 0);
        }

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            if (dueTime == TimeSpan.FromMilliseconds(2) && Interlocked.Exchange(ref _armed, 0) == 1)
            {
                action().GetAwaiter().GetResult();
            }

            return System.CreateTimer(callback, state, dueTime, period);
        }
    }

    [Fact]
    public async Task TwoFencesOnOneServer_LoginsComeBackOnlyWhenTheLastIsLifted()
    {
        var loginsBefore = await LoginsAsync();
        await using var other = LinkTestKit.Link(deployment.Blue, deployment.Green, Db, LinkTestKit.NewName("teal"));
        await deployment.Link.FenceAsync(Side.Blue, default);
        try
        {
            await other.FenceAsync(Side.Blue, default);
            // Fencing again (a retried step, a roll-forward) changes nothing.
            await other.FenceAsync(Side.Blue, default);
            await other.UnfenceAsync(Side.Blue, default);
            (await CanLogInAsync("fence_app", "app-secret")).ShouldBeFalse("the first deployment still fences blue");
        }
        finally
        {
            await other.UnfenceAsync(Side.Blue, default);
            await deployment.Link.UnfenceAsync(Side.Blue, default);
        }

        (await CanLogInAsync("fence_app", "app-secret")).ShouldBeTrue();
        (await LoginsAsync()).ShouldBe(loginsBefore);
    }

    [Fact]
    public async Task OtherDatabaseOnBlue_RefusesTheSwitchover_UnlessTheWholeServerIsAccepted()
    {
        await deployment.Blue.ExecuteAsync("CREATE DATABASE fence_neighbour");
        try
        {
            await using (var neighbour = new NpgsqlConnection(deployment.Blue.ConnectionString("fence_neighbour", "fence_app", "app-secret")))
            {
                await neighbour.OpenAsync();
                var refused = await deployment.Link.CheckSwitchoverAsync(new SwitchoverGuardrailOptions(TimeSpan.FromSeconds(300)), default);
                refused.Failures.Single(f => f.Name == "blue.fence-scope").Message.ShouldContain("fence_neighbour (1 session(s))");
                // An idle maintenance database is nobody's application.
                refused.Failures.Single(f => f.Name == "blue.fence-scope").Message.ShouldNotContain("postgres (");

                var accepted = await deployment.Link.CheckSwitchoverAsync(new SwitchoverGuardrailOptions(TimeSpan.FromSeconds(300)) { FenceWholeServer = true }, default);
                accepted.Results.Single(r => r.Name == "blue.fence-scope").Passed.ShouldBeTrue();
            }
        }
        finally
        {
            await deployment.Blue.ExecuteAsync("DROP DATABASE fence_neighbour WITH (FORCE)");
        }

        var report = await deployment.Link.CheckSwitchoverAsync(new SwitchoverGuardrailOptions(TimeSpan.FromSeconds(300)), default);
        report.Failures.ShouldBeEmpty(string.Join("; ", report.Failures.Select(f => f.Name + ": " + f.Message)));
    }

    [Fact]
    public async Task PasswordChangedOnBlueAfterCreate_WorksOnGreenAfterTheLoginSync_AndCheckNamesRolesMissingOnGreen()
    {
        await deployment.Blue.ExecuteAsync("ALTER ROLE fence_app PASSWORD 'app-secret-2'; CREATE ROLE fence_late LOGIN PASSWORD 'late-secret'");
        try
        {
            var check = await deployment.Link.CheckSwitchoverAsync(new SwitchoverGuardrailOptions(TimeSpan.FromSeconds(300)), default);
            var logins = check.Results.Single(r => r.Name == "green.logins");
            logins.Outcome.ShouldBe(Teal.Core.Guardrails.CheckOutcome.Warn);
            logins.Message.ShouldContain("fence_late (missing on green)");
            // The fixture's green has its own superuser password, as an external green would.
            logins.Message.ShouldContain($"{deployment.Green.User} (green's own user");

            var notLoggingIn = await deployment.Link.SyncLoginsAsync(default);
            notLoggingIn.ShouldContain("fence_late (missing on green)");
            notLoggingIn.ShouldNotContain(p => p.StartsWith("fence_app", StringComparison.Ordinal));

            // Green opens as at the switchover: the application logs in with blue's new password.
            await deployment.Link.UnfenceAsync(Side.Green, default);
            try
            {
                await using var onGreen = await OpenAsync(deployment.Green, "fence_app", "app-secret-2");
                (await new NpgsqlCommand("SELECT count(*) FROM writes", onGreen).ExecuteScalarAsync()).ShouldNotBeNull();
            }
            finally
            {
                await deployment.Link.FenceAsync(Side.Green, default);
                await deployment.Link.DrainAsync(Side.Green, TimeSpan.Zero, default);
            }
        }
        finally
        {
            await deployment.Blue.ExecuteAsync("ALTER ROLE fence_app PASSWORD 'app-secret'; DROP ROLE fence_late");
            await deployment.Link.SyncLoginsAsync(default);
        }
    }

    [Fact]
    public async Task SubscriptionOwnedByTheRegisteredUser_IsMovedToTealsLogin_AndKeepsApplying()
    {
        // As a deployment created before Teal had its own login: owned by green's superuser,
        // which the fence has taken LOGIN from, so the apply worker cannot restart.
        await deployment.Green.ExecuteAsync($"ALTER SUBSCRIPTION {deployment.Name} OWNER TO {deployment.Green.User}", Db);
        await using var fresh = LinkTestKit.Link(deployment.Blue, deployment.Green, Db, deployment.Name);
        await fresh.ReadStatusAsync(default);
        (await deployment.Green.ScalarAsync<string>($"SELECT pg_get_userbyid(subowner)::text FROM pg_subscription WHERE subname = '{deployment.Name}'", Db)).ShouldBe(LinkSessions.ControlRole);

        await deployment.Blue.ExecuteAsync("INSERT INTO writes (how) VALUES ('after adoption')", Db);
        await LinkTestKit.WaitUntilAsync(async () => await deployment.Green.ScalarAsync<long>("SELECT count(*) FROM writes WHERE how = 'after adoption'", Db) == 1, "apply after adoption");
    }

    private Task<NpgsqlConnection> OpenAsync(string user, string password) => OpenAsync(deployment.Blue, user, password);

    private static async Task<NpgsqlConnection> OpenAsync(PostgresServer server, string user, string password)
    {
        var connection = new NpgsqlConnection(server.ConnectionString(Db, user, password));
        try
        {
            await connection.OpenAsync();
            return connection;
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
    }

    private async Task<bool> CanLogInAsync(string user, string password) =>
        await TriesAsync(async () => await (await OpenAsync(user, password)).DisposeAsync()) is null;

    /// <summary>Which roles can log in on blue (Teal's own aside), as "name=true|false".</summary>
    private async Task<string> LoginsAsync() =>
        await deployment.Blue.ScalarAsync<string>(
            $"SELECT string_agg(rolname || '=' || rolcanlogin, ',' ORDER BY rolname) FROM pg_roles WHERE rolname NOT LIKE 'pg\\_%' AND rolname NOT LIKE 'teal\\_%'");

    private static async Task<long> CountAsync(PostgresServer server) => await server.ScalarAsync<long>("SELECT count(*) FROM writes", Db);

    private static async Task<Exception?> TriesAsync(Func<Task> action)
    {
        try
        {
            await action();
            return null;
        }
        catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException or IOException)
        {
            return ex;
        }
    }

    private static async Task ExecAsync(NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }
}
