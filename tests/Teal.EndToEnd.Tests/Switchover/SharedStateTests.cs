using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using Npgsql;
using Teal.Testing;
using Teal.Testing.Load;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// Two <c>teal serve</c> processes on one PostgreSQL state store (two control-plane machines):
/// one leads, the other serves reads and refuses changes naming the leader; when the leader dies
/// (<c>kill -9</c>, also in the middle of a switchover) or loses its lock session, the standby
/// takes over and finishes or unwinds from the journal the leader left.
/// </summary>
public sealed class SharedStateTests(Postgres15Fixture fixture) : IClassFixture<Postgres15Fixture>
{
    private static string FaultHost => RepoPaths.Built("tests/Teal.FaultHost", "Teal.FaultHost.dll");

    /// <summary>Generous: the machine is shared; the design takes over within about a second after the lock is free.</summary>
    private static readonly TimeSpan TakeoverBound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task TwoServes_OneStateStore_OneLeads_TheOtherServesReadsAndRefusesChangesNamingTheLeader()
    {
        var state = await TealStateStore.NewPostgresAsync();
        await using var first = await TealProcess.StartAsync(state: state);
        await using var second = await TealProcess.StartAsync(state: state);

        var leads = new[] { await first.IsLeaderAsync(), await second.IsLeaderAsync() };
        leads.Count(l => l).ShouldBe(1, $"exactly one leader\n{first.Log}\n---\n{second.Log}");
        var (leader, standby) = leads[0] ? (first, second) : (second, first);
        standby.Token.ShouldBe(leader.Token, "clients keep their token whichever machine answers");

        // A change through the leader is read through the standby, password included.
        await AddInstanceAsync(leader, standby, state);
        var listed = await new TealCli(standby).RunAsync("instance", "list", "--output", "json");
        listed.ShouldSucceed();
        listed.Stdout.ShouldContain("\"app\"");
        var url = await new TealCli(standby).RunAsync("instance", "url", "app");
        url.ShouldSucceed();
        url.Stdout.ShouldContain(Uri.EscapeDataString(fixture.Server.Password));

        var refused = await new TealCli(standby).RunAsync("instance", "add", "other", "--connection", fixture.Server.Uri());
        refused.ExitCode.ShouldBe(1, refused.ToString());
        refused.Stderr.ShouldContain("standby");
        refused.Stderr.ShouldContain(leader.Url);
        (await new TealCli(standby).RunAsync("instance", "list", "--output", "json")).Stdout.ShouldNotContain("\"other\"");

        var health = await HealthAsync(standby);
        health.GetProperty("role").GetString().ShouldBe("standby");
        health.GetProperty("leader").GetString().ShouldBe(leader.Url);
        health.GetProperty("state").GetString().ShouldBe("postgresql");
        (await HealthAsync(leader)).GetProperty("role").GetString().ShouldBe("leader");

        // Nothing in the state database holds a password in clear.
        (await state.ScalarAsync<long>($"SELECT count(*) FROM teal.secrets WHERE position(convert_to('{fixture.Server.Password}', 'UTF8') in sealed) > 0")).ShouldBe(0);
        (await state.ScalarAsync<long>($"SELECT count(*) FROM teal.instances WHERE data::text LIKE '%{fixture.Server.Password}%'")).ShouldBe(0);
        leader.Log.ShouldNotContain(fixture.Server.Password);
        standby.Log.ShouldNotContain(fixture.Server.Password);
    }

    [Fact]
    public async Task KillLeader_StandbyTakesOverWithinBoundedTime_AndTakesChanges()
    {
        var state = await TealStateStore.NewPostgresAsync();
        await using var first = await TealProcess.StartAsync(state: state);
        await using var second = await TealProcess.StartAsync(state: state);
        (await first.IsLeaderAsync()).ShouldBeTrue(first.Log);

        await first.KillAsync();
        var took = await WaitForLeaderAsync(second);

        took.ShouldBeLessThan(TakeoverBound, second.Log);
        await AddInstanceAsync(second, first, state);
        (await state.ScalarAsync<long>("SELECT count(*) FROM teal.events WHERE kind = 'leader-elected'")).ShouldBe(2);
        second.Log.ShouldContain("is the leader of the control plane");
    }

    [Fact]
    public async Task LeaderLosesItsLockSession_StopsActingAndExits_AndTheStandbyTakesOver()
    {
        var state = await TealStateStore.NewPostgresAsync();
        await using var first = await TealProcess.StartAsync(state: state);
        await using var second = await TealProcess.StartAsync(state: state);
        (await first.IsLeaderAsync()).ShouldBeTrue(first.Log);

        // The leader's connection to the state store breaks (as in a network failure): PostgreSQL frees its lock.
        (await state.ScalarAsync<bool>("SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'teal-leader-lock' AND pid = (SELECT pid FROM teal.leader)")).ShouldBeTrue();

        (await first.WaitForExitAsync(TakeoverBound)).ShouldBeTrue($"the old leader kept running:\n{first.Log}");
        first.Log.ShouldContain("Leadership lost");
        (await WaitForLeaderAsync(second)).ShouldBeLessThan(TakeoverBound, second.Log);
    }

    public static TheoryData<string, bool> CrashPoints => new()
    {
        { "crash-after:fence-blue", false },
        { "crash-after:flip", true },
    };

    [Theory]
    [MemberData(nameof(CrashPoints))]
    public async Task KillLeaderMidSwitchover_StandbyFinishesOrUnwindsFromTheJournal_EndpointRoutesWhereTheJournalSays(string fault, bool finishes)
    {
        var state = await TealStateStore.NewPostgresAsync();
        await using var scenario = await BlueGreenScenario.StartAsync(tealEntry: FaultHost, tealEnvironment: new Dictionary<string, string> { ["TEAL_FAULT"] = fault }, state: state);
        await using var standby = await TealProcess.StartAsync(state: state);
        var standbyCli = new TealCli(standby);
        (await scenario.Teal.IsLeaderAsync()).ShouldBeTrue(scenario.Teal.Log);
        var created = await scenario.CreateDeploymentAsync();
        var greenUrl = await scenario.InstanceUrlAsync(created.GetProperty("green").GetString()!);
        var blueUrl = scenario.Blue.ConnectionString(BlueGreenScenario.Database);

        await using var probe = new ProbeWriter(scenario.EndpointConnectionString);
        probe.Start();
        await Task.Delay(500);
        await scenario.Cli.RunAsync(["switchover", "upgrade"], TimeSpan.FromMinutes(1));
        (await scenario.Teal.WaitForExitAsync(TimeSpan.FromSeconds(60))).ShouldBeTrue($"the leader was not killed at {fault}:\n{scenario.Teal.Log}");

        // No restart of the leader: the standby takes over and recovers from the journal.
        var deployment = await WaitForStatusAsync(standbyCli, TimeSpan.FromSeconds(120), "SWITCHOVER_COMPLETED", "SWITCHOVER_FAILED");
        BlueGreenScenario.Status(deployment).ShouldBe(finishes ? "SWITCHOVER_COMPLETED" : "SWITCHOVER_FAILED", $"{deployment}\n{standby.Log}");
        (await standby.IsLeaderAsync()).ShouldBeTrue();

        await Task.Delay(1500);
        await probe.StopAsync();
        var writable = finishes ? greenUrl : blueUrl;
        var fenced = finishes ? blueUrl : greenUrl;
        (await BlueGreenScenario.AcceptsWritesAsync(writable)).ShouldBeTrue();
        (await BlueGreenScenario.AcceptsWritesAsync(fenced)).ShouldBeFalse();
        // The endpoint, now served by the new leader, routes where the journal says.
        (await BlueGreenScenario.ScalarAsync<string>(scenario.EndpointConnectionString, "SHOW server_version")).ShouldStartWith(finishes ? "17." : "15.");

        var acked = probe.Acknowledged;
        acked.Count.ShouldBeGreaterThan(0);
        await using var connection = new NpgsqlConnection(writable);
        await connection.OpenAsync();
        await using var count = new NpgsqlCommand($"SELECT count(*) FROM {ProbeWriter.Table} WHERE n = ANY($1)", connection) { Parameters = { new() { Value = acked.ToArray() } } };
        ((long)(await count.ExecuteScalarAsync())!).ShouldBe(acked.Count, $"acknowledged probe rows missing after {fault}");
    }

    /// <summary>
    /// The data path through a leader change: both serves leave the endpoints to one
    /// <c>teal proxy</c> that is given both. The proxy follows whichever leads (the standby
    /// first refuses its heartbeats), holds its clients while the leader is gone in the middle
    /// of the switchover, and is resumed where the journal says once the standby has finished or
    /// unwound it: no client sees an error, no acknowledged write is lost.
    /// </summary>
    [Theory]
    [MemberData(nameof(CrashPoints))]
    public async Task KillLeaderMidSwitchover_TealProxyFollowingBothServes_KeepsServingAndEndsRoutedWhereTheJournalSays(string fault, bool finishes)
    {
        string[] external = ["--endpoints", "external"];
        var state = await TealStateStore.NewPostgresAsync();
        await using var scenario = await BlueGreenScenario.StartAsync(tealEntry: FaultHost, tealEnvironment: new Dictionary<string, string> { ["TEAL_FAULT"] = fault }, serveArguments: external, state: state);
        await using var standby = await TealProcess.StartAsync(serveArguments: external, state: state);
        var standbyCli = new TealCli(standby);
        (await scenario.Teal.IsLeaderAsync()).ShouldBeTrue(scenario.Teal.Log);
        // The standby comes first: the proxy must pass over its 503 to reach the leader.
        await using var proxy = await TealProxyProcess.StartAsync([standby, scenario.Teal], "p1");
        await proxy.WaitForLogAsync(new System.Text.RegularExpressions.Regex($"Control plane {System.Text.RegularExpressions.Regex.Escape(scenario.Teal.Url)}/? answers"), TimeSpan.FromSeconds(60));
        await ProxyProcessTests.WaitForEndpointAsync(scenario.EndpointConnectionString);
        var created = await scenario.CreateDeploymentAsync();
        var greenUrl = await scenario.InstanceUrlAsync(created.GetProperty("green").GetString()!, asTeal: true);
        var blueUrl = scenario.Blue.ConnectionString(BlueGreenScenario.Database);

        await using var probe = new ProbeWriter(scenario.EndpointConnectionString);
        probe.Start();
        await ProxyProcessTests.WaitForAcksAsync(probe, 20);
        await scenario.Cli.RunAsync(["switchover", "upgrade"], TimeSpan.FromMinutes(1));
        (await scenario.Teal.WaitForExitAsync(TimeSpan.FromSeconds(60))).ShouldBeTrue($"the leader was not killed at {fault}:\n{scenario.Teal.Log}");

        var deployment = await WaitForStatusAsync(standbyCli, TimeSpan.FromSeconds(120), "SWITCHOVER_COMPLETED", "SWITCHOVER_FAILED");
        BlueGreenScenario.Status(deployment).ShouldBe(finishes ? "SWITCHOVER_COMPLETED" : "SWITCHOVER_FAILED", $"{deployment}\n{standby.Log}");
        (await standby.IsLeaderAsync()).ShouldBeTrue();
        await proxy.WaitForLogAsync(new System.Text.RegularExpressions.Regex($"Control plane {System.Text.RegularExpressions.Regex.Escape(standby.Url)}/? answers"), TimeSpan.FromSeconds(60));

        // The proxy, now following the new leader, routes where the journal says.
        var version = finishes ? "17." : "15.";
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!(await BlueGreenScenario.ScalarAsync<string>(ProxyProcessTests.Fresh(scenario.EndpointConnectionString), "SHOW server_version")).StartsWith(version, StringComparison.Ordinal))
        {
            DateTime.UtcNow.ShouldBeLessThan(deadline, $"the proxy never routed to {version}x:\n{proxy.Log}\n---\n{standby.Log}");
            await Task.Delay(200);
        }

        var ackedAtRoute = probe.Acknowledged.Count;
        await Task.Delay(1500);
        await probe.StopAsync();
        probe.Errors.ShouldBeEmpty($"clients through teal proxy are held, then resumed, across the leader change:\n{proxy.Log}");
        probe.Acknowledged.Count.ShouldBeGreaterThan(ackedAtRoute, "the probe writes again after the switchover");
        var writable = finishes ? greenUrl : blueUrl;
        var fenced = finishes ? blueUrl : greenUrl;
        (await BlueGreenScenario.AcceptsWritesAsync(writable)).ShouldBeTrue();
        (await BlueGreenScenario.AcceptsWritesAsync(fenced)).ShouldBeFalse();

        var acked = probe.Acknowledged;
        await using var connection = new NpgsqlConnection(writable);
        await connection.OpenAsync();
        await using var count = new NpgsqlCommand($"SELECT count(*) FROM {ProbeWriter.Table} WHERE n = ANY($1)", connection) { Parameters = { new() { Value = acked.ToArray() } } };
        ((long)(await count.ExecuteScalarAsync())!).ShouldBe(acked.Count, $"acknowledged probe rows missing after {fault}");
    }

    private async Task AddInstanceAsync(TealProcess leader, TealProcess other, TealStateStore state)
    {
        var added = await new TealCli(leader).RunAsync(["instance", "add", "app", "--connection", fixture.Server.Uri()], TimeSpan.FromSeconds(90));
        if (added.ExitCode != 0)
        {
            var sessions = await state.ScalarAsync<string>("SELECT string_agg(pid || ' ' || application_name || ' ' || state || ' ' || coalesce(wait_event_type, '') || ' ' || coalesce(wait_event, '') || ' ' || left(query, 100), E'\\n') FROM pg_stat_activity WHERE datname = current_database()");
            added.ExitCode.ShouldBe(0, $"{added}\nsessions:\n{sessions}\nleader:\n{leader.Log}\nother:\n{other.Log}");
        }
    }

    private static async Task<TimeSpan> WaitForLeaderAsync(TealProcess standby)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(90))
        {
            if (await standby.IsLeaderAsync())
            {
                return clock.Elapsed;
            }

            await Task.Delay(200);
        }

        throw new TimeoutException($"the standby never took over:\n{standby.Log}");
    }

    private static async Task<JsonElement> HealthAsync(TealProcess server)
    {
        using var http = new HttpClient();
        return await http.GetFromJsonAsync<JsonElement>($"{server.Url}/api/health");
    }

    private static async Task<JsonElement> WaitForStatusAsync(TealCli cli, TimeSpan timeout, params string[] statuses)
    {
        var deadline = DateTime.UtcNow + timeout;
        JsonElement deployment = default;
        while (DateTime.UtcNow < deadline)
        {
            var shown = await cli.RunAsync("show", "upgrade", "--output", "json");
            if (shown.ExitCode == 0)
            {
                deployment = JsonDocument.Parse(shown.Stdout).RootElement.Clone();
                if (statuses.Contains(BlueGreenScenario.Status(deployment)))
                {
                    return deployment;
                }
            }

            await Task.Delay(500);
        }

        throw new TimeoutException($"deployment upgrade did not reach {string.Join("/", statuses)} within {timeout}: {deployment}");
    }
}
