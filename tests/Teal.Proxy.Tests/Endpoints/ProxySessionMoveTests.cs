using System.Diagnostics;
using System.Globalization;
using Npgsql;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;
using Teal.Testing;
using Teal.Testing.Load;
using static Teal.Proxy.Tests.Endpoints.ProxyServersFixture;

namespace Teal.Proxy.Tests.Endpoints;

/// <summary>Sessions between transactions at a switchover go on on green with their state, or are closed when it cannot move.</summary>
[Collection(ProxyServersGroup.Name)]
public sealed class ProxySessionMoveTests(ProxyServersFixture servers)
{
    [Fact]
    public async Task IdleSession_MovesToGreen_WithItsSettingsPreparedStatementsAndListens()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        await using var connection = await OpenThroughAsync(endpoint, servers.Blue);
        await Execute(connection, "set work_mem = '7MB'; set application_name = 'mover'; set search_path = pg_catalog, public; listen teal_moved");
        // A SET rolled back is not part of the session any more, and must not come back on green.
        await Execute(connection, "begin; set statement_timeout = '5min'; rollback");
        await using var prepared = new NpgsqlCommand("select $1::int + 1", connection) { Parameters = { new() { Value = 41 } } };
        await prepared.PrepareAsync();
        (await prepared.ExecuteScalarAsync()).ShouldBe(42);
        var bluePid = await ScalarAsync<int>(connection, "select pg_backend_pid()");

        var drained = await SwitchAsync(endpoint, servers.GreenTarget);

        drained.ShouldBe(new EndpointDrainResult(0, 0) { Moving = 1 });
        (await ScalarAsync<int>(connection, "select inet_server_port()")).ShouldBe(servers.Green.Port);
        (await ScalarAsync<string>(connection, "show work_mem")).ShouldBe("7MB");
        (await ScalarAsync<string>(connection, "show application_name")).ShouldBe("mover");
        (await ScalarAsync<string>(connection, "show search_path")).ShouldBe("pg_catalog, public");
        (await ScalarAsync<string>(connection, "show statement_timeout")).ShouldBe("0");
        // Executed by name: Npgsql sends Bind for the statement it prepared on blue.
        prepared.Parameters[0].Value = 99;
        (await prepared.ExecuteScalarAsync()).ShouldBe(100);
        (await ScalarAsync<long>(connection, "select count(*) from pg_prepared_statements where not from_sql")).ShouldBe(1);
        var notified = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        connection.Notification += (_, e) => notified.TrySetResult(e.Payload);
        await servers.Green.ExecuteAsync("notify teal_moved, 'on green'");
        await connection.WaitAsync(TimeSpan.FromSeconds(10));
        (await notified.Task.WaitAsync(TimeSpan.FromSeconds(10))).ShouldBe("on green");

        (await servers.Blue.ScalarAsync<long>($"select count(*) from pg_stat_activity where pid = {bluePid}")).ShouldBe(0);
        endpoint.Stats.SessionsMoved.ShouldBe(1);
        endpoint.Stats.SessionsClosed.ShouldBe(0);
        endpoint.Stats.Active.ShouldBe(1);
    }

    [Fact]
    public async Task IdleSession_DrainedTwiceInOnePause_IsMovingBothTimes_AndGoesOnOnGreen()
    {
        // A new control-plane leader recovering a switchover pauses and drains again the endpoint
        // the old leader had already drained: the session waiting for its route must not be cut.
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        await using var connection = await OpenThroughAsync(endpoint, servers.Blue);
        await Execute(connection, "set application_name = 'twice'");

        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var first = await endpoint.DrainAsync(TimeSpan.FromSeconds(20), CancellationToken.None);
        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var second = await endpoint.DrainAsync(TimeSpan.FromSeconds(2), CancellationToken.None);
        await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);
        await endpoint.ResumeAsync(CancellationToken.None);

        first.ShouldBe(new EndpointDrainResult(0, 0) { Moving = 1 });
        second.ShouldBe(new EndpointDrainResult(0, 0) { Moving = 1 });
        (await ScalarAsync<int>(connection, "select inet_server_port()")).ShouldBe(servers.Green.Port);
        (await ScalarAsync<string>(connection, "show application_name")).ShouldBe("twice");
        endpoint.Stats.SessionsClosed.ShouldBe(0);
    }

    [Fact]
    public async Task MovingSession_LogsInAndReplaysOnGreenOnceFlippedAndItsLoginsAreBack_AndGoesOnThereOnlyAtTheResume()
    {
        var name = $"teal-ahead-{Guid.NewGuid():N}"[..30];
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        await using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(Through(endpoint, servers.Blue)) { ApplicationName = name }.ConnectionString);
        await connection.OpenAsync();
        await Execute(connection, "set work_mem = '9MB'");
        var sessionsOnGreen = $"select count(*) from pg_stat_activity where application_name = '{name}'";

        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        (await endpoint.DrainAsync(TimeSpan.FromSeconds(20), CancellationToken.None)).Moving.ShouldBe(1);
        var answer = ScalarAsync<string>(connection, "select inet_server_port() || ' ' || pg_backend_pid() || ' ' || current_setting('work_mem')");

        // Logins back before the route is green's (the flip runs alongside): nothing logs in anywhere yet.
        await endpoint.LoginsOpenAsync(CancellationToken.None);
        await Task.Delay(300);
        (await servers.Green.ScalarAsync<long>(sessionsOnGreen)).ShouldBe(0);
        (await servers.Blue.ScalarAsync<long>(sessionsOnGreen)).ShouldBe(0);

        await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);

        // Logged in on green with the client's startup packet, its state replayed there, and
        // nothing of the client's own sent there.
        (await EventuallyAsync(async () => await servers.Green.ScalarAsync<long>($"{sessionsOnGreen} and state = 'idle' and query like '%set_config%'") == 1)).ShouldBeTrue();
        var pid = await servers.Green.ScalarAsync<int>($"select pid from pg_stat_activity where application_name = '{name}' and query not like '%inet_server_port%'");
        await Task.Delay(200);
        answer.IsCompleted.ShouldBeFalse("the client went on before the resume");

        await endpoint.ResumeAsync(CancellationToken.None);

        (await answer.WaitAsync(TimeSpan.FromSeconds(30))).ShouldBe($"{servers.Green.Port} {pid} 9MB");
        endpoint.Stats.SessionsMoved.ShouldBe(1);
        endpoint.Stats.SessionsClosed.ShouldBe(0);
    }

    /// <summary>
    /// The endpoint's prepare (before the pause) reads every session's state at its boundary; a
    /// session that stays quiet moves with that state and is not read again inside the pause, one
    /// that changed its state since is read again, and one that made a temporary table since is
    /// still closed.
    /// </summary>
    [Fact]
    public async Task StateReadAheadOfThePause_QuietSessionMovesWithIt_ChangedOnesAreReadAgain()
    {
        var log = new ListLogger();
        await using var endpoint = ProxyEndpoint.Start("app", new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0), servers.BlueTarget, new ProxyOptions(), log, TimeProvider.System, verifiers: servers.Verifiers);
        await using var quiet = await OpenThroughAsync(endpoint, servers.Blue);
        await using var changed = await OpenThroughAsync(endpoint, servers.Blue);
        await using var temp = await OpenThroughAsync(endpoint, servers.Blue);
        await Execute(quiet, "set work_mem = '7MB'; listen teal_ahead");
        await using var prepared = new NpgsqlCommand("select $1::int * 2", quiet) { Parameters = { new() { Value = 4 } } };
        await prepared.PrepareAsync();
        (await prepared.ExecuteScalarAsync()).ShouldBe(8);
        await Execute(changed, "set work_mem = '9MB'");
        var quietPid = await ScalarAsync<int>(quiet, "select pg_backend_pid()");

        await endpoint.PrepareAsync(TimeSpan.FromSeconds(30), CancellationToken.None);

        // The read ahead ran on blue, between the session's transactions, and the session goes on there.
        (await servers.Blue.ScalarAsync<string>($"select query from pg_stat_activity where pid = {quietPid}")).ShouldContain("pg_prepared_statements");
        (await ScalarAsync<string>(quiet, "show work_mem")).ShouldBe("7MB");
        await Execute(changed, "set work_mem = '11MB'");
        await Execute(temp, "create temp table made_after(x int)");
        // quiet's last statement above was its own: it reads again too. A quiet one is read ahead once more.
        await endpoint.PrepareAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        await Execute(changed, "set work_mem = '12MB'");
        await Execute(temp, "insert into made_after values (1)");

        var drained = await SwitchAsync(endpoint, servers.GreenTarget);

        drained.ShouldBe(new EndpointDrainResult(1, 0) { Moving = 2 });
        (await ScalarAsync<int>(quiet, "select inet_server_port()")).ShouldBe(servers.Green.Port);
        (await ScalarAsync<string>(quiet, "show work_mem")).ShouldBe("7MB");
        prepared.Parameters[0].Value = 21;
        (await prepared.ExecuteScalarAsync()).ShouldBe(42);
        (await ScalarAsync<string>(quiet, "select string_agg(c, ',') from pg_listening_channels() c")).ShouldBe("teal_ahead");
        (await ScalarAsync<string>(changed, "show work_mem")).ShouldBe("12MB");
        var error = await Should.ThrowAsync<NpgsqlException>(ScalarAsync<int>(temp, "select 1"));
        (error as PostgresException ?? error.InnerException as PostgresException)?.SqlState.ShouldBe(PostgresErrorCodes.AdminShutdown);
        endpoint.Stats.SessionsMoved.ShouldBe(2);
        endpoint.Stats.SessionsClosed.ShouldBe(1);
        var moves = log.Lines.Where(l => l.Contains("moved to", StringComparison.Ordinal)).ToList();
        moves.Count(l => l.Contains("(read ahead of the pause", StringComparison.Ordinal)).ShouldBe(1, string.Join('\n', moves));
        moves.Count(l => l.Contains("(in the drain)", StringComparison.Ordinal)).ShouldBe(1, string.Join('\n', moves));
    }

    /// <summary>
    /// Where a fenced green admits Teal's OS user over its local socket, sessions whose client is
    /// at work log in there before the pause: at the drain nothing is left to log in, and at the
    /// resume the session goes on on that very backend, its state replayed. The socket rule may be
    /// gone by then (the fence is lifted at open-green): the login is made already. A quiet
    /// session (a pool's spare connection) logs in once green opens, as before.
    /// </summary>
    [Fact]
    public async Task LoggedInBeforeThePause_OverGreensLocalSocket_GoesOnOnThatBackend_QuietOnesLogInLater()
    {
        var log = new ListLogger();
        var tag = $"teal-early-{Guid.NewGuid():N}"[..24];
        await using var endpoint = ProxyEndpoint.Start("app", new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0), servers.BlueTarget, new ProxyOptions(), log, TimeProvider.System, verifiers: servers.Verifiers);
        await using var client = await OpenNamedAsync(endpoint, tag);
        await using var quiet = await OpenNamedAsync(endpoint, $"{tag}-q");
        await Execute(client, "set work_mem = '13MB'");
        int greenPid;
        await using (await servers.Green.AdmitTealsOsUserLocallyAsync())
        {
            await WhileBusyAsync(client, () => endpoint.LogInBeforePauseAsync(servers.GreenTarget, servers.Green.LocalSocket, CancellationToken.None));

            log.Lines.ShouldContain(l => l.Contains("1 of 1 active session(s) logged in", StringComparison.Ordinal) && l.Contains("(1 quiet one(s)", StringComparison.Ordinal), string.Join('\n', log.Lines));
            greenPid = await servers.Green.ScalarAsync<int>($"select pid from pg_stat_activity where application_name = '{tag}' and usename = '{AppUser}'");
            (await servers.Green.ScalarAsync<long>($"select count(*) from pg_stat_activity where application_name = '{tag}-q'")).ShouldBe(0);
        }

        // The flip renames green's instance: the login is for its address, not its name.
        var drained = await SwitchAsync(endpoint, servers.GreenTarget with { Instance = "app-db" });

        drained.Moving.ShouldBe(2);
        (await ScalarAsync<int>(client, "select pg_backend_pid()")).ShouldBe(greenPid, string.Join('\n', log.Lines));
        (await ScalarAsync<string>(client, "show work_mem")).ShouldBe("13MB");
        (await ScalarAsync<int>(quiet, "select inet_server_port()")).ShouldBe(servers.Green.Port);
        var moves = log.Lines.Where(l => l.Contains("moved to", StringComparison.Ordinal)).ToList();
        moves.Count(l => l.Contains("started before the pause", StringComparison.Ordinal)).ShouldBe(1, string.Join('\n', moves));
    }

    /// <summary>
    /// A quiet session that LISTENs (a worker waiting for notifications) logs in on green before
    /// the pause like a busy one, so that its LISTEN is on green before the resume; a quiet one
    /// without channels still waits for green to open.
    /// </summary>
    [Fact]
    public async Task QuietListeningSession_LogsInBeforeThePause_QuietOthersDoNot()
    {
        var tag = $"teal-listen-{Guid.NewGuid():N}"[..24];
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        await using var listener = await OpenNamedAsync(endpoint, $"{tag}-l");
        await using var quiet = await OpenNamedAsync(endpoint, $"{tag}-q");
        await Execute(listener, "listen teal_jobs");
        await using (await servers.Green.AdmitTealsOsUserLocallyAsync())
        {
            // As pause-endpoints' prepare does: the state read ahead and the logins at the same time.
            await Task.WhenAll(
                endpoint.PrepareAsync(TimeSpan.FromSeconds(30), CancellationToken.None),
                endpoint.LogInBeforePauseAsync(servers.GreenTarget, servers.Green.LocalSocket, CancellationToken.None));

            (await servers.Green.ScalarAsync<long>($"select count(*) from pg_stat_activity where application_name = '{tag}-l'")).ShouldBe(1, "the listening session did not log in on green before the pause");
            (await servers.Green.ScalarAsync<long>($"select count(*) from pg_stat_activity where application_name = '{tag}-q'")).ShouldBe(0);
        }

        var drained = await SwitchAsync(endpoint, servers.GreenTarget);

        drained.Moving.ShouldBe(2);
        (await ScalarAsync<string>(listener, "select string_agg(c, ',') from pg_listening_channels() c")).ShouldBe("teal_jobs");
        (await ScalarAsync<int>(quiet, "select inet_server_port()")).ShouldBe(servers.Green.Port);
    }

    /// <summary>
    /// In the drain, a session that LISTENs leaves its server after the others: a transaction
    /// that finishes there during the drain and NOTIFYs at its commit still reaches the listener.
    /// </summary>
    [Fact]
    public async Task Drain_ListeningSessionLeavesLast_HearsWhatATransactionFinishingInTheDrainNotifies()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        await using var listener = await OpenThroughAsync(endpoint, servers.Blue);
        var heard = new System.Collections.Concurrent.ConcurrentQueue<string>();
        listener.Notification += (_, e) => heard.Enqueue(e.Payload);
        await Execute(listener, "listen teal_late");
        await using var writer = await OpenThroughAsync(endpoint, servers.Blue);
        await Execute(writer, "begin; select 1");
        await endpoint.PrepareAsync(TimeSpan.FromSeconds(30), CancellationToken.None); // reads the listener's state ahead

        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var drain = endpoint.DrainAsync(TimeSpan.FromSeconds(20), CancellationToken.None);
        await Task.Delay(300); // the drain waits for the writer's transaction
        await Execute(writer, "notify teal_late, 'committed-in-the-drain'; commit");
        (await drain).Moving.ShouldBe(2);
        await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);
        await endpoint.ResumeAsync(CancellationToken.None);

        (await ScalarAsync<int>(listener, "select inet_server_port()")).ShouldBe(servers.Green.Port);
        heard.ShouldContain("committed-in-the-drain", "the listener had left blue before the transaction's commit notified it");
    }

    /// <summary>
    /// A listener leaves after the others, but is not cut because another session's transaction
    /// used the whole drain budget up: it still moves.
    /// </summary>
    [Fact]
    public async Task Drain_BudgetSpentByAnotherSession_TheListenerStillMoves()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        await using var listener = await OpenThroughAsync(endpoint, servers.Blue);
        await Execute(listener, "listen teal_budget");
        await using var writer = await OpenThroughAsync(endpoint, servers.Blue);
        await Execute(writer, "begin; select 1");
        await endpoint.PrepareAsync(TimeSpan.FromSeconds(30), CancellationToken.None);

        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var drained = await endpoint.DrainAsync(TimeSpan.FromMilliseconds(300), CancellationToken.None);
        await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);
        await endpoint.ResumeAsync(CancellationToken.None);

        drained.ClosedAtDeadline.ShouldBe(1, "the writer's transaction outlasted the budget");
        drained.Moving.ShouldBe(1, "the listener was cut with the writer");
        (await ScalarAsync<string>(listener, "select inet_server_port() || ' ' || (select string_agg(c, ',') from pg_listening_channels() c)")).ShouldBe($"{servers.Green.Port} teal_budget");
    }

    /// <summary>
    /// A session logged in on green before the pause gets its state there while the endpoint is
    /// still paused, not at the resume: the replay is a new backend's first work (catalog caches,
    /// the client's statements parsed), which would otherwise fall inside the client's gap.
    /// Nothing of the client's own reaches green before the resume.
    /// </summary>
    [Fact]
    public async Task LoggedInBeforeThePause_ItsStateIsReplayedBeforeTheResume()
    {
        var log = new ListLogger();
        var tag = $"teal-replay-{Guid.NewGuid():N}"[..24];
        await using var endpoint = ProxyEndpoint.Start("app", new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0), servers.BlueTarget, new ProxyOptions(), log, TimeProvider.System, verifiers: servers.Verifiers);
        await using var client = await OpenNamedAsync(endpoint, tag);
        await Execute(client, "set work_mem = '11MB'");
        await using (await servers.Green.AdmitTealsOsUserLocallyAsync())
        {
            await WhileBusyAsync(client, () => endpoint.LogInBeforePauseAsync(servers.GreenTarget, servers.Green.LocalSocket, CancellationToken.None));
        }

        var greenPid = await servers.Green.ScalarAsync<int>($"select pid from pg_stat_activity where application_name = '{tag}'");
        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        (await endpoint.DrainAsync(TimeSpan.FromSeconds(20), CancellationToken.None)).Moving.ShouldBe(1);
        var answer = ScalarAsync<string>(client, "show work_mem");

        // Still paused: the backend on green has run the replay (its last statement), the client's query waits.
        (await EventuallyAsync(async () => await servers.Green.ScalarAsync<string>($"select query from pg_stat_activity where pid = {greenPid}") is { } query && query.Contains("set_config", StringComparison.Ordinal)))
            .ShouldBeTrue("the state was not replayed on green before the resume");
        answer.IsCompleted.ShouldBeFalse("the client went on before the resume");

        await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);
        await endpoint.ResumeAsync(CancellationToken.None);
        (await answer.WaitAsync(TimeSpan.FromSeconds(30))).ShouldBe("11MB");
        (await ScalarAsync<int>(client, "select pg_backend_pid()")).ShouldBe(greenPid);
        log.Lines.ShouldContain(l => l.Contains("moved to", StringComparison.Ordinal) && l.Contains("ms before the resume; going on", StringComparison.Ordinal), string.Join('\n', log.Lines));
    }

    /// <summary>Keeps <paramref name="client"/> at work, one query after another, while <paramref name="action"/> runs.</summary>
    private static async Task WhileBusyAsync(NpgsqlConnection client, Func<Task> action)
    {
        using var stop = new CancellationTokenSource();
        var busy = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                await Execute(client, "select 1");
            }
        });
        try
        {
            await action();
        }
        finally
        {
            await stop.CancelAsync();
            await busy;
        }
    }

    /// <summary>
    /// A pause that resumes on blue (a rollback) leaves the sessions there and closes what they
    /// logged in on green.
    /// </summary>
    [Fact]
    public async Task LoggedInBeforeThePause_RollbackToBlue_ClosesTheLoginsOnGreen()
    {
        var tag = $"teal-back-{Guid.NewGuid():N}"[..24];
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        await using var moving = await OpenNamedAsync(endpoint, tag);
        await using (await servers.Green.AdmitTealsOsUserLocallyAsync())
        {
            await WhileBusyAsync(moving, () => endpoint.LogInBeforePauseAsync(servers.GreenTarget, servers.Green.LocalSocket, CancellationToken.None));
        }

        (await servers.Green.ScalarAsync<long>($"select count(*) from pg_stat_activity where application_name = '{tag}'")).ShouldBe(1);

        var drained = await SwitchAsync(endpoint, servers.BlueTarget);

        drained.Moving.ShouldBe(1);
        (await ScalarAsync<int>(moving, "select inet_server_port()")).ShouldBe(servers.Blue.Port);
        (await EventuallyAsync(async () => await servers.Green.ScalarAsync<long>($"select count(*) from pg_stat_activity where application_name = '{tag}'") == 0))
            .ShouldBeTrue("the login on green outlived the rollback");
    }

    /// <summary>
    /// A pool's idle connections move too, but their clients wait for nothing: they log in on
    /// green after the session whose client has a query waiting, so that the session with work
    /// does not queue behind them for its server process (green starts them one at a time).
    /// </summary>
    [Fact]
    public async Task IdleSessions_LogInOnGreenAfterTheSessionWhoseClientWaits()
    {
        var tag = $"teal-turn-{Guid.NewGuid():N}"[..24];
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        await using var active = await OpenNamedAsync(endpoint, $"{tag}-active");
        var idle = new List<NpgsqlConnection>();
        try
        {
            for (var i = 0; i < 8; i++)
            {
                idle.Add(await OpenNamedAsync(endpoint, $"{tag}-idle"));
            }

            await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
            (await endpoint.DrainAsync(TimeSpan.FromSeconds(20), CancellationToken.None)).Moving.ShouldBe(9);
            var answer = ScalarAsync<int>(active, "select inet_server_port()");
            await Task.Delay(200); // the query reaches the proxy, which holds it
            await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);
            await endpoint.LoginsOpenAsync(CancellationToken.None);
            (await EventuallyAsync(async () => await servers.Green.ScalarAsync<long>($"select count(*) from pg_stat_activity where application_name like '{tag}-%'") == 9)).ShouldBeTrue();
            await endpoint.ResumeAsync(CancellationToken.None);

            (await answer.WaitAsync(TimeSpan.FromSeconds(30))).ShouldBe(servers.Green.Port);
            var order = await servers.Green.ScalarAsync<bool>(
                $"select (select backend_start from pg_stat_activity where application_name = '{tag}-active') < (select min(backend_start) from pg_stat_activity where application_name = '{tag}-idle')");
            order.ShouldBeTrue("an idle session's server process started before the waiting session's");
            foreach (var connection in idle)
            {
                (await ScalarAsync<int>(connection, "select inet_server_port()")).ShouldBe(servers.Green.Port);
            }

            endpoint.Stats.SessionsMoved.ShouldBe(9);
        }
        finally
        {
            foreach (var connection in idle)
            {
                await connection.DisposeAsync();
            }
        }
    }

    private async Task<NpgsqlConnection> OpenNamedAsync(Teal.Proxy.Endpoints.ProxyEndpoint endpoint, string applicationName)
    {
        var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(Through(endpoint, servers.Blue)) { ApplicationName = applicationName }.ConnectionString);
        await connection.OpenAsync();
        return connection;
    }

    [Fact]
    public async Task SessionLoggedInBeforeGreensReadOnlyDefaultIsReset_WritesAfterTheResume()
    {
        var name = $"teal-readonly-{Guid.NewGuid():N}"[..30];
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        await using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(Through(endpoint, servers.Blue)) { ApplicationName = name }.ConnectionString);
        await connection.OpenAsync();
        try
        {
            // Green as open-green finds it: the fence's read-only default still on when its logins come back.
            await servers.Green.ExecuteAsync("alter system set default_transaction_read_only = on");
            await servers.Green.ExecuteAsync("select pg_reload_conf()");
            (await EventuallyAsync(async () => await servers.Green.ScalarAsync<string>("show default_transaction_read_only") == "on")).ShouldBeTrue();

            await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
            (await endpoint.DrainAsync(TimeSpan.FromSeconds(20), CancellationToken.None)).Moving.ShouldBe(1);
            await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);
            await endpoint.LoginsOpenAsync(CancellationToken.None);
            (await EventuallyAsync(async () => await servers.Green.ScalarAsync<long>($"select count(*) from pg_stat_activity where application_name = '{name}'") == 1)).ShouldBeTrue();

            // The rest of the unfence, then the resume.
            await servers.Green.ExecuteAsync("alter system reset default_transaction_read_only");
            await servers.Green.ExecuteAsync("select pg_reload_conf()");
            (await EventuallyAsync(async () => await servers.Green.ScalarAsync<string>("show default_transaction_read_only") == "off")).ShouldBeTrue();
            await endpoint.ResumeAsync(CancellationToken.None);

            (await ScalarAsync<string>(connection, "show default_transaction_read_only")).ShouldBe("off");
            await Execute(connection, "create temp table written_on_green(x int); insert into written_on_green values (1)");
            (await ScalarAsync<int>(connection, "select inet_server_port()")).ShouldBe(servers.Green.Port);
            connection.PostgresParameters["default_transaction_read_only"].ShouldBe("off");
        }
        finally
        {
            await servers.Green.ExecuteAsync("alter system reset default_transaction_read_only");
            await servers.Green.ExecuteAsync("select pg_reload_conf()");
        }
    }

    [Fact]
    public async Task MovedSession_LearnsGreensReportedParameters_BeforeItsNextAnswer()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        await using var connection = await OpenThroughAsync(endpoint, servers.Blue);
        connection.PostgresParameters["server_version"].ShouldStartWith("15");
        connection.PostgresParameters.ContainsKey("scram_iterations").ShouldBeFalse();

        await SwitchAsync(endpoint, servers.GreenTarget);
        (await ScalarAsync<int>(connection, "select inet_server_port()")).ShouldBe(servers.Green.Port);

        // What a client caching server_version (Npgsql's PostgresParameters) sees is green's;
        // a parameter only green reports (17's scram_iterations) arrives too.
        connection.PostgresParameters["server_version"].ShouldBe(await servers.Green.ScalarAsync<string>("show server_version"));
        connection.PostgresParameters["server_version"].ShouldStartWith("17");
        connection.PostgresParameters.ContainsKey("scram_iterations").ShouldBeTrue();
    }

    [Fact]
    public async Task SessionWithTempTable_IsClosedWithAdminShutdown_AndCountedAsClosed()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        await using var temp = await OpenThroughAsync(endpoint, servers.Blue);
        await using var plain = await OpenThroughAsync(endpoint, servers.Blue);
        await Execute(temp, "create temp table scratch(id int)");
        await ScalarAsync<int>(plain, "select 1");

        var drained = await SwitchAsync(endpoint, servers.GreenTarget);

        drained.ShouldBe(new EndpointDrainResult(1, 0) { Moving = 1 });
        var error = await Should.ThrowAsync<NpgsqlException>(ScalarAsync<int>(temp, "select 1"));
        (error as PostgresException ?? error.InnerException as PostgresException)?.SqlState.ShouldBe(PostgresErrorCodes.AdminShutdown);
        (await ScalarAsync<int>(plain, "select inet_server_port()")).ShouldBe(servers.Green.Port);
        endpoint.Stats.SessionsMoved.ShouldBe(1);
        endpoint.Stats.SessionsClosed.ShouldBe(1);
    }

    [Fact]
    public async Task SessionHoldingAdvisoryLock_IsClosed_NotMoved()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        await using var connection = await OpenThroughAsync(endpoint, servers.Blue);
        await Execute(connection, "select pg_advisory_lock(15)");

        var drained = await SwitchAsync(endpoint, servers.GreenTarget);

        drained.ShouldBe(new EndpointDrainResult(1, 0));
        await Should.ThrowAsync<NpgsqlException>(ScalarAsync<int>(connection, "select 1"));
        endpoint.Stats.SessionsClosed.ShouldBe(1);
        (await EventuallyAsync(async () => await servers.Blue.ScalarAsync<long>("select count(*) from pg_locks where locktype = 'advisory'") == 0)).ShouldBeTrue();
    }

    [Fact]
    public async Task WithoutAuthQuery_ScramSessionIsClosedAsBefore()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        await using var connection = await OpenThroughAsync(endpoint, servers.Blue);

        var drained = await SwitchAsync(endpoint, servers.GreenTarget);

        drained.ShouldBe(new EndpointDrainResult(1, 0));
        await Should.ThrowAsync<NpgsqlException>(ScalarAsync<int>(connection, "select 1"));
        endpoint.Stats.SessionsClosed.ShouldBe(1);
        endpoint.Stats.SessionsMoved.ShouldBe(0);
    }

    [Fact]
    public async Task RoleMissingOnGreen_SessionIsClosedWithAdminShutdown_AndCounted()
    {
        await servers.Blue.ExecuteAsync("drop role if exists only_on_blue; create role only_on_blue login superuser password 'blue-only-1'");
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        var connectionString = new NpgsqlConnectionStringBuilder(Through(endpoint, servers.Blue)) { Username = "only_on_blue", Password = "blue-only-1" }.ConnectionString;
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();

        var drained = await SwitchAsync(endpoint, servers.GreenTarget);

        drained.Moving.ShouldBe(1);
        var error = await Should.ThrowAsync<NpgsqlException>(ScalarAsync<int>(connection, "select 1"));
        (error as PostgresException ?? error.InnerException as PostgresException)?.SqlState.ShouldBe(PostgresErrorCodes.AdminShutdown);
        endpoint.Stats.SessionsClosed.ShouldBe(1);
        endpoint.Stats.SessionsMoved.ShouldBe(0);
    }

    [Fact]
    public async Task MovedSession_CancelReachesItsNewBackend()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        await using var connection = await OpenThroughAsync(endpoint, servers.Blue);
        await SwitchAsync(endpoint, servers.GreenTarget);
        await using var sleep = new NpgsqlCommand("select pg_sleep(60)", connection);

        var running = sleep.ExecuteNonQueryAsync();
        (await EventuallyAsync(async () => await servers.Green.ScalarAsync<long>("select count(*) from pg_stat_activity where query = 'select pg_sleep(60)'") == 1)).ShouldBeTrue();
        var clock = Stopwatch.StartNew();
        // Off this thread: Cancel blocks, and after a socket await this test may run on a socket
        // thread the proxy in this same process needs to forward the cancel.
        await Task.Run(sleep.Cancel);

        // The client still holds blue's key: the proxy sends the cancel to green with green's key.
        var error = await Should.ThrowAsync<Exception>(running);
        (error is OperationCanceledException || error is PostgresException { SqlState: PostgresErrorCodes.QueryCanceled }).ShouldBeTrue(error.ToString());
        clock.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(30), "the sleep on green was cancelled, not waited out");
        (await ScalarAsync<int>(connection, "select inet_server_port()")).ShouldBe(servers.Green.Port);
    }

    [Fact]
    public async Task WrongPassword_GetsPostgresAuthenticationError()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        var connectionString = new NpgsqlConnectionStringBuilder(Through(endpoint, servers.Blue)) { Password = "not-the-password" }.ConnectionString;
        await using var connection = new NpgsqlConnection(connectionString);

        var error = await Should.ThrowAsync<PostgresException>(connection.OpenAsync());

        error.SqlState.ShouldBe(PostgresErrorCodes.InvalidPassword);
        error.MessageText.ShouldBe($"password authentication failed for user \"{AppUser}\"");
        endpoint.Stats.Active.ShouldBe(0);
    }

    /// <summary>
    /// A client still in its SCRAM exchange with the proxy when the drain comes has no server
    /// session to leave: the drain does not wait for it — a slow or stalled client held every
    /// client's write pause until it went on (1.96 s by hand on the demo) — and once it goes on it
    /// is held like a new connection and logs in on green.
    /// </summary>
    [Fact]
    public async Task ClientStillInItsScramExchange_DoesNotHoldTheDrain_AndLogsInOnGreen()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        await using var slow = await StalledLogin.StartAsync(endpoint.LocalEndPoint.Address.ToString(), endpoint.LocalEndPoint.Port, AppUser, AppPassword, "postgres", StalledLogin.Stage.Challenged);

        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var drained = await endpoint.DrainAsync(TimeSpan.FromSeconds(20), CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(5));
        await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);
        // Its proof now: the proxy checks it and holds the login until the resume.
        var finishing = slow.FinishAsync($"SELECT 1 / (inet_server_port() = {servers.Green.Port})::int"); // division by zero anywhere but on green
        await Task.Delay(200);
        finishing.IsCompleted.ShouldBeFalse("held while the endpoint is paused");
        await endpoint.ResumeAsync(CancellationToken.None);

        drained.ShouldBe(new EndpointDrainResult(0, 0) { Moving = 1 });
        (await finishing.WaitAsync(TimeSpan.FromSeconds(10))).ShouldBeNull("logged in on green and ran its query there");
        endpoint.Stats.SessionsClosed.ShouldBe(0);
        endpoint.Stats.Active.ShouldBe(1, "admitted twice, one connection");
    }

    /// <summary>
    /// A client whose password the proxy has checked, while the proxy's own login to the server
    /// is still under way at the drain, is moved at its first ReadyForQuery; it was closed with
    /// 57P01 "during login" before, an error a pool opening a connection at that moment saw.
    /// </summary>
    [Fact]
    public async Task ServerLoginUnderWayAtTheDrain_TheSessionMovesInsteadOfBeingClosed()
    {
        await using var slowGreen = DelayedRelay.Start(servers.Green.Port, TimeSpan.FromSeconds(1.5));
        await using var endpoint = StartEndpoint(servers.GreenTarget with { Port = slowGreen.Port }, verifiers: servers.Verifiers, options: new ProxyOptions { ServerTls = ServerTlsMode.Disable });
        var opening = OpenThroughAsync(endpoint, servers.Blue);
        (await EventuallyAsync(() => slowGreen.Accepted > 0)).ShouldBeTrue(); // The proxy's login to the server is under way.

        var drained = await SwitchAsync(endpoint, servers.BlueTarget);

        await using var connection = await opening;
        drained.ShouldBe(new EndpointDrainResult(0, 0) { Moving = 1 });
        (await ScalarAsync<int>(connection, "select inet_server_port()")).ShouldBe(servers.Blue.Port);
        endpoint.Stats.SessionsClosed.ShouldBe(0);
    }

    [Fact]
    public async Task LaterSwitchover_WhileASessionStillLogsInOnTheLastTarget_TheDrainWaitsAndTheSessionFollowsTheNewRoute()
    {
        // Plain text to the servers: under `prefer` the flip also probes green for TLS, and that
        // probe, not the session's login, could be the relay's first connection.
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers, options: new ProxyOptions { ServerTls = ServerTlsMode.Disable });
        await using var slowGreen = DelayedRelay.Start(servers.Green.Port, TimeSpan.FromSeconds(2));
        await using var connection = await OpenThroughAsync(endpoint, servers.Blue);
        (await ScalarAsync<int>(connection, "select inet_server_port()")).ShouldBe(servers.Blue.Port);

        // The first switchover's move logs in on green through a relay that takes 2 s; the
        // second, back to blue (a switchback or a rollback right after), pauses and drains while
        // that login is still under way.
        var first = await SwitchAsync(endpoint, servers.GreenTarget with { Port = slowGreen.Port });
        first.Moving.ShouldBe(1);
        (await EventuallyAsync(() => slowGreen.Accepted > 0)).ShouldBeTrue(); // The session's login on green is under way.
        var clock = Stopwatch.StartNew();
        var second = await SwitchAsync(endpoint, servers.BlueTarget);

        // The drain waited for the session to land on green and leave it again: counted as
        // moving at once, it would have been left on the side a switchover fences next.
        second.Moving.ShouldBe(1);
        clock.Elapsed.ShouldBeGreaterThan(TimeSpan.FromSeconds(1));
        (await EventuallyAsync(async () => await servers.Green.ScalarAsync<long>($"select count(*) from pg_stat_activity where usename = '{AppUser}'") == 0)).ShouldBeTrue();
        (await ScalarAsync<int>(connection, "select inet_server_port()")).ShouldBe(servers.Blue.Port);
        endpoint.Stats.SessionsMoved.ShouldBe(2);
        endpoint.Stats.SessionsClosed.ShouldBe(0);
    }

    [Fact]
    public async Task PreparedStatementsUnderLoad_NoClientErrorAcrossTwoSwitchovers()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        using var stop = new CancellationTokenSource();
        var errors = new List<Exception>();
        var ports = new System.Collections.Concurrent.ConcurrentBag<int>();
        var clients = Enumerable.Range(0, 8).Select(i => Task.Run(async () =>
        {
            await using var connection = await OpenThroughAsync(endpoint, servers.Blue);
            await using var command = new NpgsqlCommand("select inet_server_port() + $1 * 0", connection) { Parameters = { new() { Value = i } } };
            await command.PrepareAsync();
            var count = 0;
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    ports.Add((int)(await command.ExecuteScalarAsync())!);
                    count++;
                }
                catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException)
                {
                    lock (errors)
                    {
                        errors.Add(ex);
                    }

                    return count;
                }
            }

            return count;
        })).ToList();

        // Every client connected (on a loaded machine that takes more than a fixed second), then some load.
        (await EventuallyAsync(() => endpoint.Stats.Active == 8, TimeSpan.FromSeconds(60))).ShouldBeTrue();
        await Task.Delay(1000);
        var first = await SwitchAsync(endpoint, servers.GreenTarget);
        await Task.Delay(1000);
        var second = await SwitchAsync(endpoint, servers.BlueTarget);
        await Task.Delay(1000);
        await stop.CancelAsync();
        var counts = await Task.WhenAll(clients);

        errors.ShouldBeEmpty();
        first.Moving.ShouldBe(8);
        second.Moving.ShouldBe(8);
        counts.ShouldAllBe(c => c > 0);
        ports.ShouldContain(servers.Green.Port);
        endpoint.Stats.SessionsMoved.ShouldBe(16);
        endpoint.Stats.SessionsClosed.ShouldBe(0);
    }

    [Fact]
    public async Task Psql_KeepsItsSessionAcrossTheSwitchover()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        var start = new ProcessStartInfo("psql")
        {
            ArgumentList = { "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", endpoint.LocalEndPoint.Port.ToString(CultureInfo.InvariantCulture), "-U", AppUser, "-d", "postgres" },
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.Environment["PGPASSWORD"] = AppPassword;
        using var psql = Process.Start(start)!; // Start returns null only for shell-executed documents.
        await psql.StandardInput.WriteLineAsync("set application_name = 'psql-moved'; select inet_server_port();");
        await psql.StandardInput.FlushAsync();
        (await psql.StandardOutput.ReadLineAsync()).ShouldBe(servers.Blue.Port.ToString(CultureInfo.InvariantCulture));

        var drained = await SwitchAsync(endpoint, servers.GreenTarget);

        await psql.StandardInput.WriteLineAsync("select inet_server_port() || ' ' || current_setting('application_name');");
        await psql.StandardInput.FlushAsync();
        (await psql.StandardOutput.ReadLineAsync()).ShouldBe($"{servers.Green.Port} psql-moved");
        psql.StandardInput.Close();
        await psql.WaitForExitAsync();
        var stderr = await psql.StandardError.ReadToEndAsync();
        psql.ExitCode.ShouldBe(0, stderr);
        drained.Moving.ShouldBe(1);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task NodePostgres_KeepsItsSessionAndNamedStatementAcrossTheSwitchover(bool tls)
    {
        var directory = Directory.CreateTempSubdirectory("teal-node-").FullName;
        try
        {
            using var certificate = Teal.Proxy.Tls.ProxyCertificate.LoadOrCreate(directory);
            await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers, options: new Teal.Proxy.Endpoints.ProxyOptions { Certificate = certificate, RequireTls = tls });
            var start = new ProcessStartInfo("node")
            {
                ArgumentList = { Path.Combine(Teal.Testing.Processes.RepoPaths.Root, "tests", "clients", "node", "session.js"), endpoint.LocalEndPoint.Port.ToString(CultureInfo.InvariantCulture), AppUser, tls ? "tls" : "plain" },
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            start.Environment["PGPASSWORD"] = AppPassword;
            using var node = Process.Start(start)!; // Start returns null only for shell-executed documents.
            await node.StandardInput.WriteLineAsync("run");
            await node.StandardInput.FlushAsync();
            (await node.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60))).ShouldBe($"{servers.Blue.Port} node-moved", await ErrorsAsync(node));

            var drained = await SwitchAsync(endpoint, servers.GreenTarget);

            // The same named statement, which node-postgres prepared on blue and will not prepare
            // again: the proxy prepared it on green before its first use there.
            await node.StandardInput.WriteLineAsync("run");
            await node.StandardInput.WriteLineAsync("quit");
            await node.StandardInput.FlushAsync();
            (await node.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60))).ShouldBe($"{servers.Green.Port} node-moved");
            node.StandardInput.Close();
            await node.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
            node.ExitCode.ShouldBe(0, await node.StandardError.ReadToEndAsync());
            drained.Moving.ShouldBe(1);
            endpoint.Stats.SessionsMoved.ShouldBe(1);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }

        static async Task<string> ErrorsAsync(Process process) =>
            process.HasExited ? await process.StandardError.ReadToEndAsync() : "node is still running";
    }

    /// <summary>
    /// postgres.js: every query a named prepared statement, three pipelined on its one query
    /// connection, and LISTEN on a connection of its own. Both sessions move as in a switchover
    /// (green's logins come back before the resume, so they log in and replay there while the
    /// endpoint is still paused); after the resume the statements run on green without being
    /// prepared again by the client, and a NOTIFY made on green at once reaches the listening
    /// session: its LISTEN was on green before any client could write there.
    /// </summary>
    [Fact]
    public async Task PostgresJs_KeepsItsPipelinedStatementsAndItsListenAcrossTheSwitchover()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        var start = new ProcessStartInfo("node")
        {
            ArgumentList = { Path.Combine(Teal.Testing.Processes.RepoPaths.Root, "tests", "clients", "node", "postgresjs.js"), endpoint.LocalEndPoint.Port.ToString(CultureInfo.InvariantCulture), AppUser },
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.Environment["PGPASSWORD"] = AppPassword;
        using var node = Process.Start(start)!; // Start returns null only for shell-executed documents.
        var errors = node.StandardError.ReadToEndAsync();
        await node.StandardInput.WriteLineAsync("run");
        await node.StandardInput.FlushAsync();
        (await node.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60))).ShouldBe($"{servers.Blue.Port} notified", node.HasExited ? await errors : "node is still running");

        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var drained = await endpoint.DrainAsync(TimeSpan.FromSeconds(20), CancellationToken.None);
        await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);
        await endpoint.LoginsOpenAsync(CancellationToken.None);
        (await EventuallyAsync(async () => await servers.Green.ScalarAsync<long>("select count(*) from pg_stat_activity where query ilike 'listen %'") >= 1))
            .ShouldBeTrue("the listening session's LISTEN was not replayed on green before the resume");
        await endpoint.ResumeAsync(CancellationToken.None);

        await node.StandardInput.WriteLineAsync("run");
        await node.StandardInput.WriteLineAsync("run");
        await node.StandardInput.WriteLineAsync("quit");
        await node.StandardInput.FlushAsync();
        (await node.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60))).ShouldBe($"{servers.Green.Port} notified", node.HasExited ? await errors : "node is still running");
        (await node.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60))).ShouldBe($"{servers.Green.Port} notified");
        await node.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        node.ExitCode.ShouldBe(0, await errors);
        drained.Moving.ShouldBe(2);
        endpoint.Stats.SessionsMoved.ShouldBe(2);
        endpoint.Stats.SessionsClosed.ShouldBe(0);
    }

    [Fact]
    public async Task PgbenchPrepared_WithoutReconnecting_HasNoErrorsAcrossTheSwitchover()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        var script = Path.Combine(Path.GetTempPath(), $"teal-proxy-pgbench-{Environment.ProcessId}.sql");
        await File.WriteAllTextAsync(script, "\\set x random(1, 1000)\nselect :x + inet_server_port();\n");
        try
        {
            var start = new ProcessStartInfo("pgbench")
            {
                ArgumentList = { "-n", "-M", "prepared", "-c", "4", "-T", "6", "-f", script, "-h", "127.0.0.1", "-p", endpoint.LocalEndPoint.Port.ToString(CultureInfo.InvariantCulture), "-U", AppUser, "postgres" },
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            start.Environment["PGPASSWORD"] = AppPassword;
            using var pgbench = Process.Start(start)!; // Start returns null only for shell-executed documents.
            var output = pgbench.StandardOutput.ReadToEndAsync();
            var errorOutput = pgbench.StandardError.ReadToEndAsync();
            (await EventuallyAsync(() => endpoint.Stats.Active == 4)).ShouldBeTrue();
            await Task.Delay(1500);

            var drained = await SwitchAsync(endpoint, servers.GreenTarget);
            await pgbench.WaitForExitAsync();

            var report = await output + await errorOutput;
            pgbench.ExitCode.ShouldBe(0, report);
            report.ShouldContain("number of failed transactions: 0");
            drained.Moving.ShouldBe(4);
            endpoint.Stats.SessionsMoved.ShouldBe(4);
            endpoint.Stats.SessionsClosed.ShouldBe(0);
        }
        finally
        {
            File.Delete(script);
        }
    }

    /// <summary>
    /// While the drain waits for a session's open transaction, an autocommit writer at work goes
    /// on committing on blue (each statement one round trip), then leaves after the transaction,
    /// moves and goes on on green: its writes stop for the rest of the pause, not for the other
    /// session's transaction as well. Nothing is lost and the writer sees no error.
    /// </summary>
    [Fact]
    public async Task Drain_AutocommitWriterGoesOnWritingOnBlueWhileATransactionEnds_ThenMoves()
    {
        var table = $"autocommit_{Guid.NewGuid():N}"[..24];
        foreach (var server in new[] { servers.Blue, servers.Green })
        {
            await server.ExecuteAsync($"create table {table} (n int primary key); grant all on {table} to {AppUser}");
        }

        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
        await using var writer = await OpenThroughAsync(endpoint, servers.Blue);
        await using var transaction = await OpenThroughAsync(endpoint, servers.Blue);
        await Execute(transaction, $"begin; insert into {table} values (-1)");
        using var stop = new CancellationTokenSource();
        var acked = 0;
        var writing = WriteUntilStoppedAsync(writer, table, () => Interlocked.Increment(ref acked), stop.Token);
        (await EventuallyAsync(() => Volatile.Read(ref acked) >= 2 * ProxyConnection.AutocommitReadies)).ShouldBeTrue("the writer did not get going");

        await endpoint.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var drain = endpoint.DrainAsync(TimeSpan.FromSeconds(20), CancellationToken.None);
        var onBlueAtDrain = await servers.Blue.ScalarAsync<long>($"select count(*) from {table}");
        await Task.Delay(500); // the drain waits for the open transaction
        var onBlueBeforeCommit = await servers.Blue.ScalarAsync<long>($"select count(*) from {table}");
        drain.IsCompleted.ShouldBeFalse("the drain did not wait for the open transaction");
        await Execute(transaction, "commit");
        var drained = await drain.WaitAsync(TimeSpan.FromSeconds(10));
        var onBlueAfterDrain = await servers.Blue.ScalarAsync<long>($"select count(*) from {table}");
        await endpoint.FlipAsync(servers.GreenTarget, CancellationToken.None);
        await endpoint.ResumeAsync(CancellationToken.None);
        var resumedAt = Volatile.Read(ref acked);
        (await EventuallyAsync(() => Volatile.Read(ref acked) >= resumedAt + 10)).ShouldBeTrue("the writer did not go on after the resume");
        await stop.CancelAsync();
        var written = await writing;

        (onBlueBeforeCommit - onBlueAtDrain).ShouldBeGreaterThan(5, "the writer's statements were held while the other session's transaction ended");
        drained.ShouldBe(new EndpointDrainResult(0, 0) { Moving = 2 });
        (await ScalarAsync<int>(writer, "select inet_server_port()")).ShouldBe(servers.Green.Port);
        var onGreen = await servers.Green.ScalarAsync<long>($"select count(*) from {table}");
        // Every acknowledged insert is on blue (before the drain ended) or on green (after the resume).
        (onBlueAfterDrain - 1 + onGreen).ShouldBe(written);
        (await servers.Blue.ScalarAsync<long>($"select count(*) from {table}")).ShouldBe(onBlueAfterDrain, "a write reached blue after the drain");
    }

    /// <summary>Autocommit inserts 1, 2, … on <paramref name="session"/> until <paramref name="stop"/>, on a thread of its own; returns how many were acknowledged.</summary>
    private static Task<int> WriteUntilStoppedAsync(NpgsqlConnection session, string table, Action acked, CancellationToken stop) =>
        ClientThread.Start("autocommit writer", () =>
        {
            var n = 0;
            while (!stop.IsCancellationRequested)
            {
                using var command = new NpgsqlCommand($"insert into {table} values ({n + 1})", session);
                command.ExecuteNonQuery();
                n++;
                acked();
            }

            return n;
        });

    private static async Task Execute(NpgsqlConnection connection, string sql)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }
}
