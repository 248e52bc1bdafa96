using System.Diagnostics;
using System.Text.Json;
using Npgsql;
using Teal.Bench.Switchover;
using Teal.Postgres.Instances;
using Teal.Testing;
using Teal.Testing.Load;
using Teal.Testing.Processes;

namespace Teal.Bench.Faults;

/// <summary>
/// One round of the torture run: a PostgreSQL 15 blue registered with an endpoint, a deployment to
/// 17, pgbench and a probe writing through the endpoint, one client writing straight to blue and one
/// straight to green (both as superuser, both trying to get past the fence); a switchover started
/// and <c>teal serve</c> killed with SIGKILL at a random moment; then a restart, and the round
/// waits until recovery has decided. What it reports is what the invariants are about: which
/// sides accepted writes when, and which acknowledged writes the writer does not have.
/// </summary>
internal sealed class FaultRound(TealProcess teal, BenchCli cli, Random random, int maxCrashMs, Action<string> log)
{
    private const string Database = "app";
    private const string AppUser = "app_user";
    private const string AppPassword = "app-secret-for-faults";
    private const int PgbenchClients = 4;

    // Green's direct writer numbers its rows far above blue's, so the two never collide on the key.
    private const long GreenNumbers = 1_000_000_000_000;

    private static readonly TimeSpan LoadBefore = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan LoadAfter = TimeSpan.FromSeconds(2);
    private static readonly TimeSpan ConvergeWithin = TimeSpan.FromMinutes(3);

    public async Task<RoundResult> RunAsync(int round)
    {
        var name = $"app{round}";
        var deployment = $"up{round}";
        await using var blue = await PostgresServer.StartAsync("15");
        try
        {
            return await RunOnceAsync(round, blue, name, deployment);
        }
        catch (Exception ex) when (ex is InvalidOperationException or NpgsqlException or TimeoutException or JsonException or KeyNotFoundException)
        {
            return RoundResult.BenchError(round, deployment, ex.ToString());
        }
        finally
        {
            await CleanUpAsync(deployment);
        }
    }

    private async Task<RoundResult> RunOnceAsync(int round, PostgresServer blue, string name, string deployment)
    {
        await blue.ExecuteAsync($"CREATE ROLE {AppUser} LOGIN PASSWORD '{AppPassword}'");
        await blue.ExecuteAsync($"CREATE DATABASE {Database}");
        await blue.ExecuteAsync(ProbeWriter.CreateTableSql, Database);
        await blue.ExecuteAsync(SideWriter.CreateTableSql, Database);
        await PgBench.InitializeAsync(blue.Host, blue.Port, blue.User, blue.Password, Database, scale: PgbenchClients);
        await blue.ExecuteAsync("ALTER TABLE pgbench_history REPLICA IDENTITY FULL", Database);
        await blue.ExecuteAsync($"GRANT ALL ON ALL TABLES IN SCHEMA public TO {AppUser}; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {AppUser}", Database);

        var port = ManagedPostgres.FreePort();
        await cli.MustAsync(["instance", "add", name, "--connection", blue.Uri(Database), "--endpoint", $"127.0.0.1:{port}"], TimeSpan.FromMinutes(2));
        var create = await cli.RunAsync(["create", deployment, "--source", name, "--target-engine-version", "17", "--wait"], TimeSpan.FromMinutes(10));
        if (create.ExitCode != 0)
        {
            return RoundResult.BenchError(round, deployment, "create failed: " + create);
        }

        var greenName = (await cli.ShowAsync(deployment)).GetProperty("green").GetString()!;
        var greenConnection = await cli.InstanceConnectionAsync(greenName, Database);
        var endpoint = new NpgsqlConnectionStringBuilder { Host = "127.0.0.1", Port = port, Username = AppUser, Password = AppPassword, Database = Database }.ConnectionString;

        await using var probe = new ProbeWriter(endpoint);
        await using var blueWriter = new SideWriter("blue", blue.ConnectionString(Database), 0);
        await using var greenWriter = new SideWriter("green", greenConnection, GreenNumbers);
        probe.Start();
        blueWriter.Start();
        greenWriter.Start();
        using var pgbench = PgbenchLoad.Start("127.0.0.1", port, AppUser, AppPassword, Database, PgbenchClients, connectPerTransaction: true);
        await Task.Delay(LoadBefore);

        // `teal switchover` without --wait returns once the guardrails passed and the steps run in
        // the server's background. Most kills land in the steps (0 to maxCrashMs after that
        // return: the pause, the fence, the flip and what follows); one in five lands while the
        // command is still in its guardrails.
        var duringGuardrails = random.NextDouble() < 0.2;
        var crashAfterMs = random.Next(0, (duringGuardrails ? 800 : maxCrashMs) + 1);
        var started = Stopwatch.StartNew();
        var switchover = cli.RunAsync(["switchover", deployment, "--output", "json"], TimeSpan.FromMinutes(5));
        if (!duringGuardrails)
        {
            var accepted = await switchover;
            if (accepted.ExitCode != 0)
            {
                return RoundResult.BenchError(round, deployment, "switchover refused: " + accepted);
            }

            started.Restart();
        }

        await Task.Delay(crashAfterMs);
        await teal.KillAsync();
        var killedAtMs = started.ElapsedMilliseconds;
        var moment = duringGuardrails ? "guardrails" : "steps";
        log($"round {round}: teal serve killed {killedAtMs} ms into the {moment}");
        _ = await switchover;
        await teal.StartAgainAsync();

        var (status, phase, converged, convergeMs) = await WaitForDecisionAsync(deployment);
        log($"round {round}: {status} after recovery ({convergeMs} ms), last phase {phase}");
        var ackedAtDecision = probe.Acknowledged.Count;
        await Task.Delay(LoadAfter);
        var ackedBeforeStop = probe.Acknowledged.Count;
        await probe.StopAsync();
        await blueWriter.StopAsync();
        await greenWriter.StopAsync();
        var load = await pgbench.StopAsync();

        var shown = await cli.ShowAsync(deployment);
        var writer = await cli.InstanceConnectionAsync(name, Database);
        var probeMissing = await MissingAsync(writer, ProbeWriter.Table, probe.Acknowledged);
        var blueMissing = await MissingAsync(writer, SideWriter.Table, [.. blueWriter.Acknowledged.Select(a => a.N)]);
        var greenMissing = await MissingAsync(writer, SideWriter.Table, [.. greenWriter.Acknowledged.Select(a => a.N)]);
        var completed = status == "SWITCHOVER_COMPLETED";
        var sides = WritableSides.From(blueWriter.Acknowledged, greenWriter.Acknowledged, completed);
        return new RoundResult(
            round,
            deployment,
            moment,
            crashAfterMs,
            killedAtMs,
            phase,
            status,
            converged,
            convergeMs,
            EndpointServesAfterRecovery: ackedBeforeStop > ackedAtDecision,
            sides,
            probe.Acknowledged.Count,
            probeMissing,
            blueWriter.Acknowledged.Count,
            blueMissing,
            greenWriter.Acknowledged.Count,
            greenMissing,
            probe.Errors.Count,
            load.AbortedClients,
            shown.TryGetProperty("statusReason", out var reason) && reason.ValueKind == JsonValueKind.String ? reason.GetString() : null,
            null);
    }

    /// <summary>Polls <c>teal show</c> until the switchover is no longer in progress (recovery decided).</summary>
    private async Task<(string Status, string? Phase, bool Converged, long Milliseconds)> WaitForDecisionAsync(string deployment)
    {
        var waiting = Stopwatch.StartNew();
        string status = "?";
        string? phase = null;
        while (waiting.Elapsed < ConvergeWithin)
        {
            var shown = await cli.RunAsync(["show", deployment, "--output", "json"], TimeSpan.FromMinutes(1));
            if (shown.ExitCode == 0)
            {
                var d = JsonDocument.Parse(shown.Stdout).RootElement;
                status = Normalize(d.GetProperty("status").GetString());
                phase = d.TryGetProperty("switchover", out var s) && s.ValueKind == JsonValueKind.Object && s.TryGetProperty("phase", out var p) ? p.ToString() : null;
                if (status != "SWITCHOVER_IN_PROGRESS")
                {
                    return (status, phase, true, waiting.ElapsedMilliseconds);
                }
            }

            await Task.Delay(200);
        }

        return (status, phase, false, waiting.ElapsedMilliseconds);
    }

    private static async Task<long> MissingAsync(string connectionString, string table, IReadOnlyList<long> acknowledged)
    {
        if (acknowledged.Count == 0)
        {
            return 0;
        }

        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var count = new NpgsqlCommand($"SELECT count(*) FROM {table} WHERE n = ANY($1)", connection) { Parameters = { new() { Value = acknowledged.ToArray() } } };
        return acknowledged.Count - (long)(await count.ExecuteScalarAsync())!;
    }

    /// <summary>Removes the round's deployment, endpoints and instances so memory stays flat over 50 rounds.</summary>
    private async Task CleanUpAsync(string deployment)
    {
        try
        {
            if (!teal.Running)
            {
                await teal.StartAgainAsync();
            }

            var shown = await cli.RunAsync(["show", deployment, "--output", "json"], TimeSpan.FromMinutes(1));
            if (shown.ExitCode == 0)
            {
                var status = Normalize(JsonDocument.Parse(shown.Stdout).RootElement.GetProperty("status").GetString());
                await cli.RunAsync(status == "SWITCHOVER_COMPLETED" ? ["delete", deployment] : ["delete", deployment, "--delete-target"], TimeSpan.FromMinutes(5));
            }

            foreach (var e in Items(JsonDocument.Parse((await cli.MustAsync(["endpoint", "list", "--output", "json"], TimeSpan.FromMinutes(1))).Stdout).RootElement))
            {
                await cli.RunAsync(["endpoint", "remove", e.GetProperty("name").GetString()!], TimeSpan.FromMinutes(1));
            }

            foreach (var instance in Items(JsonDocument.Parse((await cli.MustAsync(["instance", "list", "--output", "json"], TimeSpan.FromMinutes(1))).Stdout).RootElement))
            {
                var instanceName = instance.GetProperty("name").GetString()!;
                var managed = instance.TryGetProperty("managed", out var m) && m.ValueKind == JsonValueKind.True;
                await cli.RunAsync(managed ? ["instance", "remove", instanceName, "--delete-data"] : ["instance", "remove", instanceName], TimeSpan.FromMinutes(2));
            }
        }
        catch (Exception ex) when (ex is InvalidOperationException or TimeoutException or JsonException or KeyNotFoundException)
        {
            log($"cleanup after {deployment} failed: {ex.Message}");
        }
    }

    private static IEnumerable<JsonElement> Items(JsonElement list) =>
        list.ValueKind == JsonValueKind.Array ? list.EnumerateArray()
        : list.EnumerateObject().Where(p => p.Value.ValueKind == JsonValueKind.Array).SelectMany(p => p.Value.EnumerateArray());

    private static string Normalize(string? value) =>
        System.Text.RegularExpressions.Regex.Replace(value ?? string.Empty, "(?<=[a-z])(?=[A-Z])", "_").Replace('-', '_').ToUpperInvariant();
}
