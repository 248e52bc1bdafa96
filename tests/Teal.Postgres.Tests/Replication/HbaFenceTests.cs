using Teal.Core.Errors;
using Npgsql;
using Teal.Core.Engines;
using Teal.Postgres.Instances;
using Teal.Postgres.Replication;
using Teal.Testing;

namespace Teal.Postgres.Tests.Replication;

/// <summary>Blue and a green that the link treats as Teal-provisioned (<see cref="LinkSpec.GreenManaged"/>).</summary>
public sealed class ManagedGreenServers() : BlueGreenServers(null);

/// <summary>
/// A managed green is fenced by its own pg_hba.conf, not by NOLOGIN (ARCHITECTURE.md, "The
/// fence"): every client is refused at connection start, superusers included, while the roles
/// keep LOGIN in the catalog that green's physical readers replay; the server's own file comes
/// back byte for byte when the fence is lifted.
/// </summary>
public sealed class HbaFenceTests(ManagedGreenServers servers) : IClassFixture<ManagedGreenServers>
{
    private const string Db = "hba_fenced";

    [Fact]
    public void Fenced_KeepsOnlyTheRulesTealsLoginMatches_NarrowedToIt_ThenRejectsEveryoneElse()
    {
        const string original = """
            # TYPE  DATABASE        USER            ADDRESS                 METHOD
            local   all             all                                     scram-sha-256
            host    all             app,teal_control 10.0.0.0/8             scram-sha-256 # a comment
            host    all             app             0.0.0.0/0               trust
            host    all             +admins         127.0.0.1/32            trust
            include_if_exists more.conf
            host    replication     all             ::1/128                 scram-sha-256
            """;

        var fenced = HbaFence.Fenced(original);

        HbaFence.IsFenced(fenced).ShouldBeTrue();
        fenced.Split('\n').Where(l => l.Length > 0 && !l.StartsWith('#')).ShouldBe(
        [
            "local all teal_control scram-sha-256",
            "host all teal_control 10.0.0.0/8 scram-sha-256",
            "host replication teal_control ::1/128 scram-sha-256",
            "local all all reject",
            "host all all all reject",
        ]);
        HbaFence.IsFenced(original).ShouldBeFalse();

        // Where Teal's OS user is mapped to every role (a server Teal provisioned, 16+): its peer
        // login over the local socket comes after Teal's own rules and before the rejects.
        HbaFence.Fenced(original, localLogin: true).Split('\n').Where(l => l.Length > 0 && !l.StartsWith('#')).ShouldBe(
        [
            "local all teal_control scram-sha-256",
            "host all teal_control 10.0.0.0/8 scram-sha-256",
            "host replication teal_control ::1/128 scram-sha-256",
            "local all all peer map=teal_proxy",
            "local all all reject",
            "host all all all reject",
        ]);
    }

    [Fact]
    public async Task ManagedGreen_RefusesEveryClientAtLogin_RolesKeepLogin_UnfenceRestoresTheFile()
    {
        await servers.Blue.ExecuteAsync("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hba_app') THEN CREATE ROLE hba_app LOGIN PASSWORD 'app-secret'; END IF; END $$");
        await LinkTestKit.CreateDatabaseAsync(servers.Blue, Db, "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 10); GRANT ALL ON items TO hba_app");
        var hbaFile = Path.Combine(servers.Green.Server.DataDirectory, "pg_hba.conf");
        var original = await File.ReadAllBytesAsync(hbaFile);
        var name = LinkTestKit.NewName("teal");
        await using var link = LinkTestKit.Link(servers.Blue, servers.Green, Db, name, new LinkSpec(name, LinkTestKit.Connection(servers.Blue, Db), LinkTestKit.Connection(servers.Green, Db)) { CopyRoles = true, GreenManaged = true });

        await LinkTestKit.StartAsync(link);

        HbaFence.IsFenced(await File.ReadAllTextAsync(hbaFile)).ShouldBeTrue();
        (await File.ReadAllBytesAsync(hbaFile + HbaFence.SavedSuffix)).ShouldBe(original);
        // The application's role and green's own superuser: refused by the file, before any role check.
        foreach (var (user, password) in new[] { ("hba_app", "app-secret"), (servers.Green.User, servers.Green.Password) })
        {
            var refused = await LinkTestKit.TryWriteAsClientAsync(servers.Green, Db, "INSERT INTO items VALUES (1000)", user, password);
            refused.ShouldNotBeNull($"{user} wrote on fenced green").SqlState.ShouldBe(PostgresErrorCodes.InvalidAuthorizationSpecification);
            refused.MessageText.ShouldContain("pg_hba.conf rejects connection");
        }

        // Green's catalog keeps LOGIN (a physical reader replays it and admits the role), and
        // Teal's login still writes.
        (await servers.Green.ScalarAsync<bool>("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'hba_app'")).ShouldBeTrue();
        await LinkTestKit.WriteAsTealAsync(servers.Green, Db, "SELECT 1");
        var check = await link.CheckSwitchoverAsync(new SwitchoverGuardrailOptions(TimeSpan.FromSeconds(30)), default);
        check.Results.ShouldContain(r => r.Name == "green.fence" && r.Outcome == Teal.Core.Guardrails.CheckOutcome.Pass, string.Join("; ", check.Results.Select(r => $"{r.Name} {r.Outcome} {r.Message}")));

        // Fencing again (a retried step, a recovery) keeps the saved original, not the fenced file.
        await link.FenceAsync(Side.Green, default);
        (await File.ReadAllBytesAsync(hbaFile + HbaFence.SavedSuffix)).ShouldBe(original);

        await link.UnfenceAsync(Side.Green, default);

        (await File.ReadAllBytesAsync(hbaFile)).ShouldBe(original);
        (await LinkTestKit.TryWriteAsClientAsync(servers.Green, Db, "SELECT count(*) FROM items", "hba_app", "app-secret")).ShouldBeNull();
        await link.RemoveAsync(default);
    }

    /// <summary>
    /// The one login a fenced managed green admits besides Teal's own: the OS user Teal runs as,
    /// over the server's abstract Unix socket, as any role and without a password (peer, map
    /// teal_proxy; Teal's proxy logs its moving sessions in there before the pause). It is in the
    /// fenced file only: the server's own file asks that socket for a password again.
    /// </summary>
    [Fact]
    public async Task FencedGreen_AdmitsTealsOsUserOverItsLocalSocketAsAnyRole_OnlyWhileFenced()
    {
        const string db = "hba_local_login";
        await using var link = await StartLinkAsync(db);

        var socket = await link.FencedLoginSocketAsync(default);

        socket.ShouldBe($"\0teal/.s.PGSQL.{servers.Green.Port}");
        (await servers.Green.LocalStartupAsync("hba_app", db)).ShouldBe(0, "AuthenticationOk: admitted as the application's role without a password");
        (await LinkTestKit.TryWriteAsClientAsync(servers.Green, db, "SELECT 1", "hba_app", "app-secret")).ShouldNotBeNull("over TCP the fence refuses the same role");

        await link.UnfenceAsync(Side.Green, default);

        (await link.FencedLoginSocketAsync(default)).ShouldBeNull();
        (await servers.Green.LocalStartupAsync("hba_app", db)).ShouldBe(10, "the server's own rules ask the socket for SCRAM again");
        await link.RemoveAsync(default);
    }

    [Fact]
    public void RoleLines_ReplaceTealsOwnMapLines_KeepTheServersOwn_AndLeaveOutNamesThatNeedQuotes()
    {
        var ident = """
            # MAPNAME       SYSTEM-USERNAME         PG-USERNAME
            ops             alice                   dba

            """;

        var once = LocalLogin.WithRoleLines(ident, ["app", "b\"ad", "postgres"]);
        var twice = LocalLogin.WithRoleLines(once, ["reporting"]);

        once.ShouldContain("ops             alice                   dba");
        once.ShouldContain($"teal_proxy \"{LocalLogin.OsUser}\" \"app\"\nteal_proxy \"{LocalLogin.OsUser}\" \"postgres\"\n");
        once.ShouldNotContain("b\"ad");
        twice.ShouldContain("ops             alice                   dba");
        twice.Split('\n').Count(l => l.StartsWith("teal_proxy ", StringComparison.Ordinal)).ShouldBe(1);
        twice.ShouldContain($"teal_proxy \"{LocalLogin.OsUser}\" \"reporting\"");
        twice.Split('\n').Count(l => l.StartsWith("# Written by Teal", StringComparison.Ordinal)).ShouldBe(1);
    }

    /// <summary>
    /// PostgreSQL 15's pg_ident.conf has no <c>all</c>: before a switchover's pause Teal maps its OS
    /// user to each role that can log in, one line each, so a fenced 15 (the old blue a switchback
    /// returns to) admits the proxy's logins over its local socket too.
    /// </summary>
    [Fact]
    public async Task FencedPostgres15_AdmitsTealsOsUserOverItsLocalSocket_ForTheRolesMappedBeforeThePause()
    {
        const string db = "hba_local_15";
        servers.Blue.MajorVersion.ShouldBe(15);
        await using var link = await StartLinkAsync(db, blueManaged: true);
        (await servers.Blue.LocalStartupAsync("hba_app", db)).ShouldBe(10, "unfenced, blue's own rules ask the socket for a password");

        await link.WarmUpAsync(default);
        await link.FenceAsync(Side.Blue, default);
        try
        {
            (await servers.Blue.LocalStartupAsync("hba_app", db)).ShouldBe(0, "fenced, Teal's OS user gets in as a role mapped before the pause");
            (await LinkTestKit.TryWriteAsClientAsync(servers.Blue, db, "SELECT 1", "hba_app", "app-secret")).ShouldNotBeNull("over TCP the fence refuses the same role");
        }
        finally
        {
            await link.UnfenceAsync(Side.Blue, default);
        }

        (await servers.Blue.LocalStartupAsync("hba_app", db)).ShouldBe(10);
        await link.RemoveAsync(default);
    }

    /// <summary>
    /// Opening green must leave no session read-only. A session that logs in once logins are back
    /// (Teal's proxy logs its moving sessions in there before the resume) inherits the read-only
    /// default still in force and counts on the reload's signal to lift it. Two reloads (one for
    /// pg_hba.conf, one for the default) let the observer see "off" by handling the first signal
    /// after the second file was written, before the postmaster had handled the second reload:
    /// bench/switchover's loop then saw pgbench's first UPDATE on green refused ("cannot execute
    /// UPDATE in a read-only transaction"). So the unfence reloads once, after both files.
    /// </summary>
    [Fact]
    public async Task OpeningGreen_ReloadsOnceAfterBothFiles_AndASessionLoggedInAsLoginsCameBackWritesAtOnce_UnfencingAgainReloadsNothing()
    {
        const string db = "hba_open_once";
        await using var link = await StartLinkAsync(db);
        var reloadsBefore = Reloads();

        NpgsqlConnection? early = null;
        await link.OpenGreenAsync(
            async ct =>
            {
                // As a moving session would: logs in as soon as the file lets it.
                for (var attempt = 0; early is null; attempt++)
                {
                    var conn = new NpgsqlConnection(servers.Green.ConnectionString(db, "hba_app", "app-secret"));
                    try
                    {
                        await conn.OpenAsync(ct);
                        early = conn;
                    }
                    catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.InvalidAuthorizationSpecification && attempt < 200)
                    {
                        await conn.DisposeAsync();
                        await Task.Delay(5, ct);
                    }
                }
            },
            default);

        await using (early)
        {
            (Reloads() - reloadsBefore).ShouldBe(1, "one reload for pg_hba.conf and the read-only default together");
            await using var insert = new NpgsqlCommand("INSERT INTO items VALUES (1)", early);
            (await insert.ExecuteNonQueryAsync()).ShouldBe(1);
        }

        // stop-replication lifts green's fence again in case a recovery skipped open-green; on an
        // open green that reloads nothing (a reload right after the resume makes every client
        // backend read the configuration files again at its next statement).
        await link.UnfenceAsync(Side.Green, default);
        await Task.Delay(300); // a reload would be logged by now
        (Reloads() - reloadsBefore).ShouldBe(1, "unfencing an open green reloaded it again");

        await link.RemoveAsync(default);
    }

    /// <summary>
    /// A role's own "off" setting of the read-only default, reset by the fence, comes back after
    /// the resume rather than inside the pause: the open leaves it to stop-replication's unfence
    /// (the server's default is already "off" then, so no client meets a difference).
    /// </summary>
    [Fact]
    public async Task OverridesTheFenceReset_ComeBackWithTheUnfenceAfterTheOpen()
    {
        const string db = "hba_open_overrides";
        await using var link = await StartLinkAsync(db);
        Task<string?> Override() => servers.Green.ScalarAsync<string?>(
            "SELECT array_to_string(setconfig, ',') FROM pg_db_role_setting WHERE setrole = 'hba_app'::regrole", db);
        try
        {
            await servers.Green.ExecuteAsync($"ALTER ROLE hba_app IN DATABASE {db} SET default_transaction_read_only = off");
            await link.FenceAsync(Side.Green, default);
            (await Override()).ShouldBeNull("the fence resets a role's writable setting");

            await link.OpenGreenAsync(_ => Task.CompletedTask, default);

            (await Override()).ShouldBeNull("restored inside the write pause");
            (await LinkTestKit.TryWriteAsClientAsync(servers.Green, db, "INSERT INTO items VALUES (1)", "hba_app", "app-secret")).ShouldBeNull();

            await link.UnfenceAsync(Side.Green, default);

            (await Override()).ShouldBe("default_transaction_read_only=off");
        }
        finally
        {
            await link.UnfenceAsync(Side.Green, default);
            await servers.Green.ExecuteAsync($"ALTER ROLE hba_app IN DATABASE {db} RESET default_transaction_read_only");
            await link.RemoveAsync(default);
        }
    }

    /// <summary>The application's role and a database with a table on blue, and a started link to the managed green.</summary>
    private async Task<PostgresReplicationLink> StartLinkAsync(string db, bool blueManaged = false)
    {
        await servers.Blue.ExecuteAsync("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'hba_app') THEN CREATE ROLE hba_app LOGIN PASSWORD 'app-secret'; END IF; END $$");
        await LinkTestKit.CreateDatabaseAsync(servers.Blue, db, "CREATE TABLE items (id int PRIMARY KEY); GRANT ALL ON items TO hba_app");
        var name = LinkTestKit.NewName("teal");
        var link = LinkTestKit.Link(servers.Blue, servers.Green, db, name, new LinkSpec(name, LinkTestKit.Connection(servers.Blue, db), LinkTestKit.Connection(servers.Green, db)) { CopyRoles = true, BlueManaged = blueManaged, GreenManaged = true });
        await LinkTestKit.StartAsync(link);
        return link;
    }

    private int Reloads() =>
        File.ReadLines(servers.Green.Server.LogFile).Count(l => l.Contains("received SIGHUP, reloading configuration files", StringComparison.Ordinal));

    /// <summary>
    /// A backend checks pg_hba.conf against the rules of the moment it was forked, and only once
    /// its client speaks: a client that connected before the fence, or stopped halfway through
    /// its password exchange, would log in after the drain under the server's own rules and
    /// write with BEGIN READ WRITE. The drain ends both kinds of backend.
    /// </summary>
    [Fact]
    public async Task LoginsUnderWayAtTheFence_NeverGetInAfterTheDrain_HoweverLongTheClientWaited()
    {
        const string db = "hba_stalled_logins";
        await using var link = await StartLinkAsync(db, blueManaged: true);
        await using var silent = await StalledLogin.StartAsync(servers.Blue.Host, servers.Blue.Port, "hba_app", "app-secret", db, StalledLogin.Stage.Connected);
        await using var challenged = await StalledLogin.StartAsync(servers.Blue.Host, servers.Blue.Port, "hba_app", "app-secret", db, StalledLogin.Stage.Challenged);

        await link.FenceAsync(Side.Blue, default);
        var drained = await link.DrainAsync(Side.Blue, TimeSpan.Zero, default);

        drained.ClosedIdle.ShouldBe(2, "both backends still logging in were ended");
        (await silent.FinishAsync("BEGIN READ WRITE; INSERT INTO items VALUES (1001); COMMIT")).ShouldNotBeNull("the silent client logged in to fenced blue and wrote");
        (await challenged.FinishAsync("BEGIN READ WRITE; INSERT INTO items VALUES (1002); COMMIT")).ShouldNotBeNull("the client that stopped in its SCRAM exchange logged in to fenced blue and wrote");
        // Teal's own sessions were not among them: the link still works on blue.
        await link.UnfenceAsync(Side.Blue, default);
        (await servers.Blue.ScalarAsync<long>("SELECT count(*) FROM items WHERE id > 1000", db)).ShouldBe(0);
        (await LinkTestKit.TryWriteAsClientAsync(servers.Blue, db, "INSERT INTO items VALUES (1003)", "hba_app", "app-secret")).ShouldBeNull();
        await link.RemoveAsync(default);
    }

    /// <summary>
    /// The switchover writes the fenced file while the endpoints drain (ISwitchoverStep.WorksAhead):
    /// until the fence's reload every client still logs in, and a switchover that goes back then
    /// finds the server's own file put back.
    /// </summary>
    [Fact]
    public async Task PreparedFence_WritesTheFileButAdmitsClientsUntilTheFencesReload_AndGoingBackPutsTheFileBack()
    {
        const string db = "hba_prepared";
        await using var link = await StartLinkAsync(db, blueManaged: true);
        var hbaFile = Path.Combine(servers.Blue.Server.DataDirectory, "pg_hba.conf");
        var original = await File.ReadAllBytesAsync(hbaFile);

        await link.PrepareFenceAsync(Side.Blue, default);

        HbaFence.IsFenced(await File.ReadAllTextAsync(hbaFile)).ShouldBeTrue();
        (await LinkTestKit.TryWriteAsClientAsync(servers.Blue, db, "INSERT INTO items VALUES (1)", "hba_app", "app-secret")).ShouldBeNull();
        // A switchover rolled back before its fence ran.
        await link.UnfenceAsync(Side.Blue, default);
        (await File.ReadAllBytesAsync(hbaFile)).ShouldBe(original);

        // Prepared again, then fenced: the fence's reload shuts the client out.
        await link.PrepareFenceAsync(Side.Blue, default);
        await link.FenceAsync(Side.Blue, default);
        (await LinkTestKit.TryWriteAsClientAsync(servers.Blue, db, "INSERT INTO items VALUES (2)", "hba_app", "app-secret")).ShouldNotBeNull();
        await link.UnfenceAsync(Side.Blue, default);
        (await File.ReadAllBytesAsync(hbaFile)).ShouldBe(original);
        (await LinkTestKit.TryWriteAsClientAsync(servers.Blue, db, "INSERT INTO items VALUES (3)", "hba_app", "app-secret")).ShouldBeNull();
        await link.RemoveAsync(default);
    }

    [Fact]
    public async Task FencedByItsFile_UnfencedByALinkThatWouldUseNologin_TheFileComesBackAllTheSame()
    {
        const string db = "hba_either";
        await LinkTestKit.CreateDatabaseAsync(servers.Blue, db, "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 10)");
        var hbaFile = Path.Combine(servers.Green.Server.DataDirectory, "pg_hba.conf");
        var original = await File.ReadAllBytesAsync(hbaFile);
        var name = LinkTestKit.NewName("teal");
        var spec = new LinkSpec(name, LinkTestKit.Connection(servers.Blue, db), LinkTestKit.Connection(servers.Green, db)) { GreenManaged = true };
        await using (var fencedByFile = LinkTestKit.Link(servers.Blue, servers.Green, db, name, spec))
        {
            await LinkTestKit.StartAsync(fencedByFile);
            HbaFence.IsFenced(await File.ReadAllTextAsync(hbaFile)).ShouldBeTrue();
        }

        // The same deployment's link after a crash, built as if green were not Teal's (the layer
        // it would fence with is NOLOGIN): the file is its own record, so the unfence lifts it.
        await using var other = LinkTestKit.Link(servers.Blue, servers.Green, db, name, spec with { GreenManaged = false });
        await other.UnfenceAsync(Side.Green, default);

        (await File.ReadAllBytesAsync(hbaFile)).ShouldBe(original);
        (await LinkTestKit.TryWriteAsClientAsync(servers.Green, db, "SELECT count(*) FROM pg_class", servers.Green.User, servers.Green.Password)).ShouldBeNull();
        await other.RemoveAsync(default);
    }

    [Fact]
    public async Task FencedFile_ThatDoesNotParse_IsRefused_NamingTheLine_AndTheServersOwnFileComesBack()
    {
        const string db = "hba_invalid";
        var hbaFile = Path.Combine(servers.Green.Server.DataDirectory, "pg_hba.conf");
        var original = await File.ReadAllBytesAsync(hbaFile);
        // A DBA's edit not reloaded yet: the server runs on the rules it read, the file on disk
        // has a rule for everyone, Teal's login included, that no PostgreSQL accepts.
        var own = System.Text.Encoding.UTF8.GetString(original) + "host all all 127.0.0.1/32 no-such-method\n";
        await File.WriteAllTextAsync(hbaFile, own);
        try
        {
            var (link, refused) = await StartRefusedAsync(db);
            await using var _ = link;

            refused.Code.ShouldBe("fence.hba-invalid");
            refused.Message.ShouldContain("no-such-method");
            refused.Message.ShouldContain("its own file was put back");
            (await File.ReadAllTextAsync(hbaFile)).ShouldBe(own);
            // Written in one round trip each, the files left no large object behind.
            (await servers.Green.ScalarAsync<long>("SELECT count(*) FROM pg_largeobject_metadata", db)).ShouldBe(0);
            (await LinkTestKit.TryWriteAsClientAsync(servers.Green, db, "SELECT 1", servers.Green.User, servers.Green.Password)).ShouldBeNull();
            await link.RemoveAsync(default);
        }
        finally
        {
            await File.WriteAllBytesAsync(hbaFile, original);
        }
    }

    [Fact]
    public async Task FencedFile_ThatWouldLockTealOut_IsRefused_AndTheServersOwnFileComesBack()
    {
        const string db = "hba_lockout";
        var hbaFile = Path.Combine(servers.Green.Server.DataDirectory, "pg_hba.conf");
        var original = await File.ReadAllBytesAsync(hbaFile);
        // Every login, Teal's included, is admitted only by a rule naming its users through a
        // file: the fenced file keeps rules for "all" and Teal's login alone, so it would keep none.
        var users = Path.Combine(servers.Green.Server.DataDirectory, "teal_users.txt");
        await File.WriteAllTextAsync(users, $"{LinkSessions.ControlRole}\n{servers.Green.User}\n");
        var own = "host all @teal_users.txt 127.0.0.1/32 scram-sha-256\nhost all @teal_users.txt ::1/128 scram-sha-256\n";
        await File.WriteAllTextAsync(hbaFile, own);
        await servers.Green.ExecuteAsync("SELECT pg_reload_conf()");
        try
        {
            var (link, refused) = await StartRefusedAsync(db);
            await using var _ = link;

            refused.Code.ShouldBe("fence.hba-locks-out");
            refused.Message.ShouldContain("its own file was put back");
            (await File.ReadAllTextAsync(hbaFile)).ShouldBe(own);
            // The reload is done: the server's own rules admit its superuser again.
            (await LinkTestKit.TryWriteAsClientAsync(servers.Green, db, "SELECT 1", servers.Green.User, servers.Green.Password)).ShouldBeNull();
            await link.RemoveAsync(default);
        }
        finally
        {
            // Put back without a login: whatever file the server last read may refuse them all.
            await File.WriteAllBytesAsync(hbaFile, original);
            File.Delete(users);
            var postmaster = (await File.ReadAllLinesAsync(Path.Combine(servers.Green.Server.DataDirectory, "postmaster.pid")))[0];
            using (var hup = System.Diagnostics.Process.Start("kill", ["-HUP", postmaster]))
            {
                await hup.WaitForExitAsync();
            }

            await LinkTestKit.WaitUntilAsync(async () => await LinkTestKit.TryWriteAsClientAsync(servers.Green, "postgres", "SELECT 1", servers.Green.User, servers.Green.Password) is null, "green admitting its superuser again");
        }
    }

    /// <summary>A deployment of a new database whose start (green's fence) is refused: the link, to remove, and the refusal.</summary>
    private async Task<(PostgresReplicationLink Link, TealException Refused)> StartRefusedAsync(string db)
    {
        await LinkTestKit.CreateDatabaseAsync(servers.Blue, db, "CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items SELECT generate_series(1, 10)");
        var name = LinkTestKit.NewName("teal");
        var spec = new LinkSpec(name, LinkTestKit.Connection(servers.Blue, db), LinkTestKit.Connection(servers.Green, db)) { GreenManaged = true };
        var link = LinkTestKit.Link(servers.Blue, servers.Green, db, name, spec);
        return (link, await Should.ThrowAsync<TealException>(() => LinkTestKit.StartAsync(link)));
    }
}
