using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Npgsql;
using Teal.Postgres.Instances;
using Teal.Testing;
using Teal.Testing.Load;
using Teal.Testing.Processes;

namespace Teal.Bench.Switchover;

/// <summary>
/// Repeated switchovers through one endpoint kind on one
/// <c>teal serve</c>, each round set up as in tests/Teal.EndToEnd.Tests/BlueGreenScenario.cs: a
/// PostgreSQL 15 blue registered with <c>teal instance add</c>, pgbench's tables and a probe
/// table. The round creates a PostgreSQL 17 green, loads blue through the endpoint, switches over,
/// checks every acknowledged probe write on the new writer, and removes everything it started so
/// memory stays flat over the rounds.
/// </summary>
internal sealed class SwitchoverBench(string endpoint, int switchovers, Baseline? baseline, Action<string> log)
{
    private const string Database = "app";
    private const string AppUser = "app_user";
    private const string AppPassword = "app-secret-for-bench";
    private const int PgbenchClients = 8;

    // At least the number of clients: with fewer branches than clients, TPC-B transactions queue
    // on the branch rows and pgbench measures that contention (pgbench's documentation says
    // so), which would also stretch every drain and PAUSE. The hand-rolled baseline uses the same.
    private const int PgbenchScale = 8;

    // TEAL_BENCH_PGBOUNCER_AUTH_FILE=scram-secrets: the application role's SCRAM secret in
    // PgBouncer's auth_file instead of its password (a variant; both the default and the
    // hand-rolled baseline use passwords).
    private static readonly bool ScramSecretsInAuthFile = Environment.GetEnvironmentVariable("TEAL_BENCH_PGBOUNCER_AUTH_FILE") == "scram-secrets";
    private static readonly TimeSpan LoadBefore = TimeSpan.FromSeconds(3);
    private static readonly TimeSpan LoadAfter = TimeSpan.FromSeconds(2);

    /// <summary>
    /// The kind with the endpoints in two <c>teal proxy</c> processes (<c>teal serve --endpoints
    /// external</c>): the probe writes through one, pgbench keeps its sessions through the other.
    /// </summary>
    public const string TwoProxies = "proxy-two-processes";

    private readonly List<TealProxyProcess> _proxies = [];

    public async Task<KindResult> RunAsync()
    {
        var runs = new List<SwitchoverRun>();
        await using var teal = await WarmTeal.StartServeAsync(log, endpoint == TwoProxies ? ["--endpoints", "external"] : null);
        var cli = new BenchCli(teal);
        log($"{endpoint}: teal serve at {teal.Url}");
        for (var i = 1; i <= switchovers; i++)
        {
            // A fresh PostgreSQL 15 blue every round (15 → 17 each time): a 17 → 17 round from the
            // previous green cannot copy the schema on this machine, because the only pg_dump and
            // pg_dumpall here are 15's and they refuse a 17 server (see README.md).
            var name = $"app{i}";
            var blue = await PostgresServer.StartAsync("15");
            PgBouncerServer? bouncer = null;
            SwitchoverRun run;
            try
            {
                var client = await SetUpAsync(cli, blue, name, i, b => bouncer = b);
                run = await RunOnceAsync(cli, client, name, i);
            }
            catch (Exception ex) when (ex is InvalidOperationException or NpgsqlException or TimeoutException or JsonException or KeyNotFoundException)
            {
                // Whatever broke is the finding: keep it, with the rounds before it, in the JSON.
                run = Failed(i, $"up{i}", "?", "BENCH_ERROR", ex.ToString(), 0);
            }

            runs.Add(run);
            log($"{endpoint} #{i}: {(run.Completed ? "completed" : "NOT completed: " + run.Status)}, gap at switchover {run.SwitchoverGapMs?.ToString("0", CultureInfo.InvariantCulture) ?? "?"} ms " +
                $"(whole window {run.LongestGapMs:0} ms), " +
                $"write pause {run.WritePauseMilliseconds?.ToString("0", CultureInfo.InvariantCulture) ?? "?"} ms, probe errors {run.ProbeErrors}, " +
                $"pgbench aborted {run.PgbenchAbortedClients}, lost {run.LostWrites}");
            await CleanUpAsync(cli, endpoint, log, name, run);
            foreach (var proxy in _proxies)
            {
                // SIGTERM: the proxy leaves the control plane once its sessions are gone; a
                // killed one would stay registered for a minute and refuse the next switchover.
                proxy.Terminate();
                await proxy.WaitForExitAsync(TimeSpan.FromSeconds(60));
                await proxy.DisposeAsync();
            }

            _proxies.Clear();
            if (bouncer is not null)
            {
                await bouncer.DisposeAsync();
            }

            await blue.DisposeAsync();
            if (!run.Completed)
            {
                // A switchover that did not complete is the result; more rounds on top of a state
                // the bench did not plan for would only blur it. The error text is in the run.
                break;
            }
        }

        var logFile = Path.Combine(Path.GetTempPath(), $"teal-bench-{endpoint}-serve.log");
        await File.WriteAllTextAsync(logFile, teal.Log);
        log($"{endpoint}: teal serve's log in {logFile}");
        return KindResult.From(endpoint, switchovers, runs, baseline, null);
    }

    /// <summary>
    /// Frees the round's servers so memory stays flat: the deployment goes (green kept, as
    /// operators do), then the endpoints, the old blue (external: unregistered; the bench stops it)
    /// and the new writer (managed: stopped and deleted). Failures are logged, not fatal.
    /// </summary>
    internal static async Task CleanUpAsync(BenchCli cli, string endpoint, Action<string> log, string name, SwitchoverRun run)
    {
        try
        {
            var instances = JsonDocument.Parse((await cli.MustAsync(["instance", "list", "--output", "json"], TimeSpan.FromMinutes(1))).Stdout).RootElement;
            var deployments = await cli.RunAsync(["show", run.Deployment, "--output", "json"], TimeSpan.FromMinutes(1));
            if (deployments.ExitCode == 0)
            {
                // A green that took over (even when the bench itself failed afterwards) is kept by
                // delete, and removed below with the other instances.
                var switchedOver = Normalize(JsonDocument.Parse(deployments.Stdout).RootElement.GetProperty("status").GetString()) == "SWITCHOVER_COMPLETED";
                await cli.MustAsync(run.Completed || switchedOver ? ["delete", run.Deployment] : ["delete", run.Deployment, "--delete-target"], TimeSpan.FromMinutes(5));
            }

            var endpoints = JsonDocument.Parse((await cli.MustAsync(["endpoint", "list", "--output", "json"], TimeSpan.FromMinutes(1))).Stdout).RootElement;
            foreach (var e in Items(endpoints))
            {
                await cli.MustAsync(["endpoint", "remove", e.GetProperty("name").GetString()!], TimeSpan.FromMinutes(1));
            }

            instances = JsonDocument.Parse((await cli.MustAsync(["instance", "list", "--output", "json"], TimeSpan.FromMinutes(1))).Stdout).RootElement;
            foreach (var instance in Items(instances))
            {
                var instanceName = instance.GetProperty("name").GetString()!;
                var managed = instance.TryGetProperty("managed", out var m) && m.ValueKind == JsonValueKind.True;
                await cli.MustAsync(managed ? ["instance", "remove", instanceName, "--delete-data"] : ["instance", "remove", instanceName], TimeSpan.FromMinutes(2));
            }
        }
        catch (Exception ex) when (ex is InvalidOperationException or TimeoutException or JsonException or KeyNotFoundException)
        {
            log($"{endpoint}: cleanup after {name} failed: {ex.Message}");
        }
    }

    /// <summary>The items of a list response: a bare array, or the first array property of an object.</summary>
    internal static IEnumerable<JsonElement> Items(JsonElement list) =>
        list.ValueKind == JsonValueKind.Array ? list.EnumerateArray()
        : list.EnumerateObject().Where(p => p.Value.ValueKind == JsonValueKind.Array).SelectMany(p => p.Value.EnumerateArray());

    /// <summary>Schema and grants on blue, then blue and its endpoint registered with Teal. Returns how applications connect.</summary>
    private async Task<Client> SetUpAsync(BenchCli cli, PostgresServer blue, string name, int i, Action<PgBouncerServer> started)
    {
        log($"{endpoint} #{i}: blue PostgreSQL {blue.Version} on port {blue.Port} as {name}");
        await blue.ExecuteAsync($"CREATE ROLE {AppUser} LOGIN PASSWORD '{AppPassword}'");
        await blue.ExecuteAsync($"CREATE DATABASE {Database}");
        await blue.ExecuteAsync(ProbeWriter.CreateTableSql, Database);
        await PgBench.InitializeAsync(blue.Host, blue.Port, blue.User, blue.Password, Database, scale: PgbenchScale);
        // pgbench_history has no key; it is insert-only, so a full replica identity is enough for logical replication.
        await blue.ExecuteAsync("ALTER TABLE pgbench_history REPLICA IDENTITY FULL", Database);
        await blue.ExecuteAsync($"GRANT ALL ON ALL TABLES IN SCHEMA public TO {AppUser}; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {AppUser}", Database);

        if (endpoint.StartsWith("proxy", StringComparison.Ordinal))
        {
            var port = ManagedPostgres.FreePort();
            await cli.MustAsync(["instance", "add", name, "--connection", blue.Uri(Database), "--endpoint", $"127.0.0.1:{port}"], TimeSpan.FromMinutes(2));
            if (endpoint == TwoProxies)
            {
                // p1 listens where the endpoint is declared (the probe's way in), p2 elsewhere (pgbench's).
                var second = ManagedPostgres.FreePort();
                _proxies.Add(await WarmTeal.StartProxyAsync(cli.Server, $"p1-{i}"));
                _proxies.Add(await WarmTeal.StartProxyAsync(cli.Server, $"p2-{i}", [$"{name}=127.0.0.1:{second}"]));
                foreach (var proxy in _proxies)
                {
                    await proxy.WaitForLogAsync(new System.Text.RegularExpressions.Regex($"Endpoint {name} listens on"), TimeSpan.FromSeconds(60));
                }

                log($"{endpoint} #{i}: teal proxy p1-{i} on {port} (probe), p2-{i} on {second} (pgbench, sessions kept)");
                return new Client("127.0.0.1", second, AppUser, AppPassword, Database, ConnectPerTransaction: false) { ProbePort = port };
            }

            return endpoint switch
            {
                // Sessions kept across the switchover: the proxy moves them to green, prepared statements included.
                "proxy-sessions" => new Client("127.0.0.1", port, AppUser, AppPassword, Database, ConnectPerTransaction: false),
                "proxy-prepared" => new Client("127.0.0.1", port, AppUser, AppPassword, Database, ConnectPerTransaction: false) { QueryMode = "prepared" },
                // -C: a new connection per transaction, as a pooled application connects.
                _ => new Client("127.0.0.1", port, AppUser, AppPassword, Database, ConnectPerTransaction: true),
            };
        }

        // PgBouncer in transaction pooling with its appdb entry on blue's app database. Its own
        // application role (with pg_read/write_all_data) is on blue; Teal copies roles to green.
        var bouncer = await PgBouncerServer.StartAsync(blue, new PgBouncerServerOptions { TargetDatabase = Database, AppScramSecretInAuthFile = ScramSecretsInAuthFile });
        started(bouncer);
        await cli.MustAsync(["instance", "add", name, "--connection", blue.Uri(Database)], TimeSpan.FromMinutes(2));
        await cli.MustAsync(
            ["endpoint", "add", $"bouncer{i}", "--instance", name, "--pgbouncer", $"{bouncer.Host}:{bouncer.Port}", "--admin-user", PgBouncerServer.AdminUser,
             "--database", PgBouncerServer.Database, "--config", bouncer.ConfigFile],
            TimeSpan.FromMinutes(2),
            new Dictionary<string, string> { ["TEAL_PGBOUNCER_PASSWORD"] = bouncer.AdminPassword });
        log($"{endpoint} #{i}: PgBouncer on port {bouncer.Port}");
        // No -C: transaction pooling keeps client connections across the switchover; that is PgBouncer's promise.
        return new Client(bouncer.Host, bouncer.Port, bouncer.AppUser, bouncer.AppPassword, PgBouncerServer.Database, ConnectPerTransaction: false);
    }

    private async Task<SwitchoverRun> RunOnceAsync(BenchCli cli, Client client, string name, int i)
    {
        var deployment = $"up{i}";
        var source = await cli.InstanceConnectionAsync(name, Database);
        var sourceVersion = await ScalarAsync<string>(source, "SHOW server_version");

        log($"{endpoint} #{i}: teal create {deployment} (source {name}, PostgreSQL {sourceVersion} → 17)");
        var created = Stopwatch.StartNew();
        var create = await cli.RunAsync(["create", deployment, "--source", name, "--target-engine-version", "17", "--wait"], TimeSpan.FromMinutes(10));
        var createSeconds = created.Elapsed.TotalSeconds;
        if (create.ExitCode != 0)
        {
            return Failed(i, deployment, sourceVersion, "CREATE_FAILED", create.ToString(), createSeconds);
        }

        await using var probe = new ProbeWriter(client.ProbeConnectionString);
        probe.Start();
        using var pgbench = PgbenchLoad.Start(client.Host, client.Port, client.User, client.Password, client.Database, PgbenchClients, client.ConnectPerTransaction, client.QueryMode);
        // The probe is the measuring instrument: the switchover starts only once it is writing.
        var waiting = Stopwatch.StartNew();
        while (probe.Acknowledged.Count == 0 && waiting.Elapsed < TimeSpan.FromSeconds(60))
        {
            await Task.Delay(50);
        }

        await Task.Delay(LoadBefore);
        var ackedBefore = probe.Acknowledged.Count;
        log($"{endpoint} #{i}: teal switchover {deployment} under load");
        var switched = Stopwatch.StartNew();
        var switchover = await cli.RunAsync(["switchover", deployment, "--wait", "--output", "json"], TimeSpan.FromMinutes(10));
        var switchoverMs = switched.ElapsedMilliseconds;
        var ackedAtEnd = probe.Acknowledged.Count;
        await Task.Delay(LoadAfter);
        await probe.StopAsync();
        var load = await pgbench.StopAsync();

        var shown = await cli.ShowAsync(deployment);
        var status = Normalize(shown.GetProperty("status").GetString());
        var completed = switchover.ExitCode == 0 && status == "SWITCHOVER_COMPLETED";
        var reported = SwitchoverOf(switchover.Stdout, shown);
        var (phases, writePause) = ParseSwitchover(reported);
        var (pausedAt, resumedAt) = PauseWindow(reported);
        var (beforePause, afterResume) = PlaceGap(probe.LongestGapWindow, pausedAt, resumedAt);
        var atSwitchover = pausedAt is { } from && resumedAt is { } to ? probe.LongestGapOverlapping(from, to) : null;

        // Lost writes: acknowledged numbers the writer behind the application's name does not have
        // (green after a switchover, blue after a rollback).
        var acked = probe.Acknowledged;
        var writer = await cli.InstanceConnectionAsync(name, Database);
        long present;
        await using (var connection = new NpgsqlConnection(writer))
        {
            await connection.OpenAsync();
            await using var count = new NpgsqlCommand($"SELECT count(*) FROM {ProbeWriter.Table} WHERE n = ANY($1)", connection) { Parameters = { new() { Value = acked.ToArray() } } };
            present = (long)(await count.ExecuteScalarAsync())!;
        }

        var probeErrors = probe.Errors;
        return new SwitchoverRun(
            i,
            deployment,
            sourceVersion,
            completed,
            status,
            completed ? null : switchover.ToString(),
            Math.Round(probe.LongestGap.TotalMilliseconds, 1),
            ProbeCoveredSwitchover: ackedBefore > 0 && acked.Count > ackedAtEnd,
            acked.Count,
            probeErrors.Count,
            [.. probeErrors.Distinct().Take(3)],
            acked.Count - present,
            load.AbortedClients,
            load.ErrorLines.Count,
            [.. load.ErrorLines.Distinct().Take(3)],
            writePause,
            switchoverMs,
            Math.Round(createSeconds, 1),
            phases,
            beforePause,
            afterResume,
            atSwitchover is { } gap ? Math.Round(gap.TotalMilliseconds, 1) : null);
    }

    /// <summary>Where the probe's longest gap lies against the switchover's <c>pausedAt</c> and <c>resumedAt</c>.</summary>
    internal static (double? BeforePause, double? AfterResume) PlaceGap((DateTimeOffset From, DateTimeOffset To)? gap, DateTimeOffset? pausedAt, DateTimeOffset? resumedAt) =>
        gap is { } window
            ? (pausedAt is { } p ? Math.Round((p - window.From).TotalMilliseconds, 1) : null,
               resumedAt is { } r ? Math.Round((window.To - r).TotalMilliseconds, 1) : null)
            : (null, null);

    /// <summary>The switchover's <c>pausedAt</c> and <c>resumedAt</c>.</summary>
    internal static (DateTimeOffset? PausedAt, DateTimeOffset? ResumedAt) PauseWindow(JsonElement? switchover)
    {
        static DateTimeOffset? At(JsonElement? element, string name) =>
            element is { } e && e.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String && value.TryGetDateTimeOffset(out var at) ? at : null;

        return (At(switchover, "pausedAt"), At(switchover, "resumedAt"));
    }

    /// <summary>
    /// The <c>switchover</c> object of the command's JSON, or of <c>teal show</c>'s when the command
    /// printed none (a failed command prints its error on stderr; the shown deployment still has it).
    /// </summary>
    internal static JsonElement? SwitchoverOf(string stdout, JsonElement shown)
    {
        var deployment = shown;
        try
        {
            deployment = JsonDocument.Parse(stdout).RootElement.Clone();
        }
        catch (JsonException)
        {
            // Keep the shown deployment.
        }

        return deployment.TryGetProperty("switchover", out var switchover) && switchover.ValueKind == JsonValueKind.Object ? switchover : null;
    }

    /// <summary>Phases and write pause from the switchover's JSON.</summary>
    internal static (IReadOnlyList<PhaseTiming> Phases, double? WritePause) ParseSwitchover(JsonElement? reported)
    {
        if (reported is not { } switchover)
        {
            return ([], null);
        }

        var phases = new List<PhaseTiming>();
        if (switchover.TryGetProperty("phases", out var list) && list.ValueKind == JsonValueKind.Array)
        {
            foreach (var phase in list.EnumerateArray())
            {
                phases.Add(new PhaseTiming(
                    phase.GetProperty("step").ToString(),
                    phase.TryGetProperty("result", out var result) ? result.ToString() : string.Empty,
                    phase.TryGetProperty("milliseconds", out var ms) && ms.ValueKind == JsonValueKind.Number ? Math.Round(ms.GetDouble(), 1) : 0));
            }
        }

        double? writePause = switchover.TryGetProperty("writePauseMilliseconds", out var pause) && pause.ValueKind == JsonValueKind.Number ? Math.Round(pause.GetDouble(), 1) : null;
        return (phases, writePause);
    }

    internal static SwitchoverRun Failed(int i, string deployment, string sourceVersion, string status, string error, double createSeconds) =>
        new(i, deployment, sourceVersion, false, status, error, 0, false, 0, 0, [], 0, 0, 0, [], null, 0, Math.Round(createSeconds, 1), []);

    /// <summary>Status as the API spells it (<c>SWITCHOVER_COMPLETED</c>), whatever casing the JSON uses.</summary>
    internal static string Normalize(string? value) =>
        System.Text.RegularExpressions.Regex.Replace(value ?? string.Empty, "(?<=[a-z])(?=[A-Z])", "_").Replace('-', '_').ToUpperInvariant();

    private static async Task<T> ScalarAsync<T>(string connectionString, string sql)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        return (T)(await command.ExecuteScalarAsync())!;
    }

    /// <summary>How the application connects: through the endpoint, never to a server directly.</summary>
    private sealed record Client(string Host, int Port, string User, string Password, string Database, bool ConnectPerTransaction)
    {
        /// <summary>pgbench's -M: simple, or prepared (named prepared statements per connection).</summary>
        public string QueryMode { get; init; } = "simple";

        /// <summary>Where the probe connects when not where pgbench does (the two-proxy kind).</summary>
        public int? ProbePort { get; init; }

        public string ProbeConnectionString => new NpgsqlConnectionStringBuilder(ConnectionString) { Port = ProbePort ?? Port }.ConnectionString;

        public string ConnectionString => new NpgsqlConnectionStringBuilder
        {
            Host = Host,
            Port = Port,
            Username = User,
            Password = Password,
            Database = Database,
            // Transaction pooling behind PgBouncer: no session state to reset.
            NoResetOnClose = true,
        }.ConnectionString;
    }
}
