using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using MySqlConnector;
using Teal.MySql.Connections;
using Teal.Postgres.Instances;
using Teal.Testing;
using Teal.Testing.Processes;

namespace Teal.Bench.Switchover;

/// <summary>
/// Kind <c>mariadb-proxy</c>: repeated MariaDB 10.11 → 10.11 switchovers through Teal's proxy
/// (which speaks the MySQL protocol), on one <c>teal serve</c>. Each round starts a fresh MariaDB
/// blue (tests/Teal.Testing's <see cref="MariaDbServer"/>), creates database <c>app</c> with the
/// probe's and the load's tables and the application account, registers it with an endpoint,
/// creates a managed green, runs bench/Teal.Bench.Probe <c>--mysql --load 8</c> through the
/// endpoint (the same probe and load as handrolled-haproxy-mariadb.sh, so both are measured
/// alike), switches over, and checks every acknowledged probe number on the new writer and that
/// the old blue refuses the application's writes.
/// </summary>
internal sealed class MariaDbSwitchoverBench(int switchovers, Baseline? baseline, Action<string> log)
{
    public const string Kind = "mariadb-proxy";
    private const string Database = "app";
    private const string AppUser = "app_user";
    private const string AppPassword = "app-secret-for-bench";
    private const int LoadClients = 8;
    private const int ProbeIntervalMs = 5;
    private static readonly TimeSpan LoadBefore = TimeSpan.FromSeconds(3);
    private static readonly TimeSpan LoadAfter = TimeSpan.FromSeconds(2);

    /// <summary>What the probe process said on stderr (one probe runs at a time), for the error when it gives no report.</summary>
    private static readonly System.Text.StringBuilder ProbeStderr = new();

    public async Task<KindResult> RunAsync()
    {
        var runs = new List<SwitchoverRun>();
        await using var teal = await WarmTeal.StartServeAsync(log);
        var cli = new BenchCli(teal);
        log($"{Kind}: teal serve at {teal.Url}");
        for (var i = 1; i <= switchovers; i++)
        {
            var name = $"app{i}";
            var blue = await MariaDbServer.StartAsync();
            SwitchoverRun run;
            try
            {
                var endpointPort = await SetUpAsync(cli, blue, name, i);
                run = await RunOnceAsync(cli, blue, name, endpointPort, i);
            }
            catch (Exception ex) when (ex is InvalidOperationException or MySqlException or TimeoutException or JsonException or KeyNotFoundException or IOException)
            {
                run = SwitchoverBench.Failed(i, $"up{i}", "?", "BENCH_ERROR", ex.ToString(), 0);
            }

            runs.Add(run);
            log($"{Kind} #{i}: {(run.Completed ? "completed" : "NOT completed: " + run.Status)}, gap at switchover {run.SwitchoverGapMs?.ToString("0", CultureInfo.InvariantCulture) ?? "?"} ms " +
                $"(whole window {run.LongestGapMs:0} ms), write pause {run.WritePauseMilliseconds?.ToString("0", CultureInfo.InvariantCulture) ?? "?"} ms, " +
                $"probe errors {run.ProbeErrors}, load errors {run.LoadErrors}, lost {run.LostWrites}, phases " +
                string.Join(' ', run.Phases.Select(p => $"{p.Step}={p.Milliseconds:0}")));
            await SwitchoverBench.CleanUpAsync(cli, Kind, log, name, run);
            await blue.DisposeAsync();
            if (!run.Completed)
            {
                break;
            }
        }

        // teal serve's own log (the proxy's drain timings, the steps), for reading where a gap went.
        var logFile = Path.Combine(Path.GetTempPath(), $"teal-bench-{Kind}-serve.log");
        await File.WriteAllTextAsync(logFile, teal.Log);
        log($"{Kind}: teal serve's log in {logFile}");
        return KindResult.From(Kind, switchovers, runs, baseline, null);
    }

    /// <summary>Schema, load tables and the application account on blue; blue registered with a proxy endpoint. Returns the endpoint's port.</summary>
    private async Task<int> SetUpAsync(BenchCli cli, MariaDbServer blue, string name, int i)
    {
        log($"{Kind} #{i}: blue MariaDB {blue.Version} on port {blue.Port} as {name}");
        await blue.ExecuteAsync(
            $"""
            CREATE DATABASE {Database};
            CREATE TABLE {Database}.probe (n BIGINT PRIMARY KEY, at DATETIME(6) NOT NULL DEFAULT NOW(6)) ENGINE=InnoDB;
            CREATE TABLE {Database}.load_accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL DEFAULT 0) ENGINE=InnoDB;
            CREATE TABLE {Database}.load_history (id BIGINT AUTO_INCREMENT PRIMARY KEY, account INT NOT NULL, delta INT NOT NULL, at DATETIME(6) NOT NULL DEFAULT NOW(6)) ENGINE=InnoDB;
            INSERT INTO {Database}.load_accounts (id) SELECT seq FROM {Database}.seq_1_to_1000;
            CREATE USER {AppUser}@'%' IDENTIFIED BY '{AppPassword}';
            GRANT SELECT, INSERT, UPDATE, DELETE ON {Database}.* TO {AppUser}@'%';
            """);
        var port = ManagedPostgres.FreePort();
        await cli.MustAsync(["instance", "add", name, "--connection", blue.Uri(Database), "--endpoint", $"127.0.0.1:{port}"], TimeSpan.FromMinutes(2));
        return port;
    }

    private async Task<SwitchoverRun> RunOnceAsync(BenchCli cli, MariaDbServer blue, string name, int endpointPort, int i)
    {
        var deployment = $"up{i}";
        log($"{Kind} #{i}: teal create {deployment} (source {name}, MariaDB {blue.Version} → 10.11)");
        var created = Stopwatch.StartNew();
        var create = await cli.RunAsync(["create", deployment, "--source", name, "--target-engine-version", "10.11", "--wait"], TimeSpan.FromMinutes(10));
        var createSeconds = created.Elapsed.TotalSeconds;
        if (create.ExitCode != 0)
        {
            return SwitchoverBench.Failed(i, deployment, blue.Version, "CREATE_FAILED", create.ToString(), createSeconds);
        }

        var output = Path.Combine(Path.GetTempPath(), $"teal-bench-mariadb-probe-{Environment.ProcessId}-{i}.json");
        var endpoint = AppConnectionString("127.0.0.1", endpointPort);
        using var probe = StartProbe(endpoint, output);
        // The probe is the measuring instrument: the switchover starts only once it is writing.
        var waiting = Stopwatch.StartNew();
        while (await CountAsync(blue.ConnectionString(Database), "SELECT COUNT(*) FROM probe") == 0 && waiting.Elapsed < TimeSpan.FromSeconds(60))
        {
            await Task.Delay(50);
        }

        await Task.Delay(LoadBefore);
        log($"{Kind} #{i}: teal switchover {deployment} under load");
        var switched = Stopwatch.StartNew();
        var switchover = await cli.RunAsync(["switchover", deployment, "--wait", "--output", "json"], TimeSpan.FromMinutes(10));
        var switchoverMs = switched.ElapsedMilliseconds;
        var switchoverEnded = DateTimeOffset.UtcNow;
        await Task.Delay(LoadAfter);
        var report = await StopProbeAsync(probe, output);

        var shown = await cli.ShowAsync(deployment);
        var status = SwitchoverBench.Normalize(shown.GetProperty("status").GetString());
        var completed = switchover.ExitCode == 0 && status == "SWITCHOVER_COMPLETED";
        var reported = SwitchoverBench.SwitchoverOf(switchover.Stdout, shown);
        var (phases, writePause) = SwitchoverBench.ParseSwitchover(reported);
        var (pausedAt, resumedAt) = SwitchoverBench.PauseWindow(reported);
        var acks = report.Acks;
        var longest = LongestGap(acks, null, null);
        var (beforePause, afterResume) = SwitchoverBench.PlaceGap(longest?.Window, pausedAt, resumedAt);
        var atSwitchover = pausedAt is { } from && resumedAt is { } to ? LongestGap(acks, from, to) : null;

        // Lost writes: acknowledged numbers the writer behind the application's name (green, now
        // open; its admin login from `teal instance url`) does not have.
        var writer = await cli.MustAsync(["instance", "url", name], TimeSpan.FromMinutes(1));
        var info = MySqlConnectionStrings.Parse(writer.Stdout.Trim());
        var present = await NumbersAsync(new MySqlConnectionStringBuilder { Server = info.Host, Port = (uint)info.Port, UserID = info.User, Password = info.Password, Database = Database, Pooling = false }.ConnectionString);
        var lost = acks.LongCount(a => !present.Contains(a.N));
        var blueRefuses = completed ? await RefusesWritesAsync(AppConnectionString(blue.Host, blue.Port)) : (bool?)null;

        return new SwitchoverRun(
            i,
            deployment,
            blue.Version,
            completed,
            status,
            completed ? null : switchover.ToString(),
            Math.Round(longest?.Milliseconds ?? 0, 1),
            ProbeCoveredSwitchover: acks.Count > 0 && pausedAt is { } p && acks[0].At < p && acks[^1].At > switchoverEnded,
            acks.Count,
            report.ProbeErrors,
            report.ProbeErrorSamples,
            lost,
            0,
            0,
            [],
            writePause,
            switchoverMs,
            Math.Round(createSeconds, 1),
            phases,
            beforePause,
            afterResume,
            atSwitchover is { } gap ? Math.Round(gap.Milliseconds, 1) : null)
        {
            LoadCommitted = report.LoadCommitted,
            LoadErrors = report.LoadErrors,
            LoadErrorSamples = report.LoadErrorSamples,
            OldBlueRefusesWrites = blueRefuses,
        };
    }

    private static string AppConnectionString(string host, int port) => new MySqlConnectionStringBuilder
    {
        Server = host,
        Port = (uint)port,
        UserID = AppUser,
        Password = AppPassword,
        Database = Database,
        ConnectionTimeout = 30,
        DefaultCommandTimeout = 60,
        // Plain text on both paths: the baseline's HAProxy passes bytes to a server without a
        // certificate, where MySqlConnector's default (Preferred) would take TLS from Teal's proxy.
        SslMode = MySqlSslMode.None,
    }.ConnectionString;

    /// <summary>bench/Teal.Bench.Probe (built by run.sh) with its stdin a pipe: closing it stops the probe.</summary>
    private static Process StartProbe(string connectionString, string output)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { RepoPaths.Built("bench/Teal.Bench.Probe", "Teal.Bench.Probe.dll"), "--mysql", "--load", LoadClients.ToString(CultureInfo.InvariantCulture), connectionString, ProbeIntervalMs.ToString(CultureInfo.InvariantCulture), output })
        {
            info.ArgumentList.Add(arg);
        }

        var process = Process.Start(info) ?? throw new InvalidOperationException("could not start Teal.Bench.Probe");
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is { } line)
            {
                lock (ProbeStderr)
                {
                    ProbeStderr.AppendLine(line);
                }
            }
        };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    private static async Task<ProbeResult> StopProbeAsync(Process probe, string output)
    {
        probe.StandardInput.Close();
        using (var grace = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
        {
            await probe.WaitForExitAsync(grace.Token);
        }

        if (!File.Exists(output))
        {
            lock (ProbeStderr)
            {
                throw new InvalidOperationException($"Teal.Bench.Probe exited {probe.ExitCode} without its report: {ProbeStderr}");
            }
        }

        try
        {
            using var document = JsonDocument.Parse(await File.ReadAllTextAsync(output));
            var root = document.RootElement;
            var acks = root.GetProperty("acks").EnumerateArray()
                .Select(a => new Ack(a.GetProperty("n").GetInt64(), DateTimeOffset.UnixEpoch.AddMilliseconds(a.GetProperty("atMs").GetDouble())))
                .ToList();
            var errors = root.GetProperty("errors").EnumerateArray().Select(e => e.GetProperty("message").GetString() ?? string.Empty).ToList();
            var load = root.GetProperty("load");
            return new ProbeResult(
                acks,
                errors.Count,
                [.. errors.Distinct().Take(3)],
                load.GetProperty("committed").GetInt64(),
                load.GetProperty("errors").GetInt32(),
                [.. load.GetProperty("errorSamples").EnumerateArray().Select(e => e.GetString() ?? string.Empty)]);
        }
        finally
        {
            File.Delete(output);
        }
    }

    /// <summary>
    /// The longest time between two consecutive acknowledgements, over all of them, or (with
    /// <paramref name="from"/>/<paramref name="to"/>) over the pairs whose interval overlaps that
    /// window — as handrolled-haproxy-mariadb.sh measures its switchover.
    /// </summary>
    private static Gap? LongestGap(IReadOnlyList<Ack> acks, DateTimeOffset? from, DateTimeOffset? to)
    {
        Gap? longest = null;
        for (var k = 1; k < acks.Count; k++)
        {
            if (from is { } f && to is { } t && !(acks[k].At > f && acks[k - 1].At < t))
            {
                continue;
            }

            var ms = (acks[k].At - acks[k - 1].At).TotalMilliseconds;
            if (longest is null || ms > longest.Milliseconds)
            {
                longest = new Gap(ms, (acks[k - 1].At, acks[k].At));
            }
        }

        return longest;
    }

    private static async Task<long> CountAsync(string connectionString, string sql)
    {
        await using var connection = new MySqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new MySqlCommand(sql, connection);
        return Convert.ToInt64(await command.ExecuteScalarAsync(), CultureInfo.InvariantCulture);
    }

    private static async Task<HashSet<long>> NumbersAsync(string connectionString)
    {
        var numbers = new HashSet<long>();
        await using var connection = new MySqlConnection(connectionString);
        await connection.OpenAsync();
        await using var select = new MySqlCommand("SELECT n FROM probe", connection);
        await using var reader = await select.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            numbers.Add(reader.GetInt64(0));
        }

        return numbers;
    }

    /// <summary>Whether the application's account is refused a write on blue directly (a refused login counts as refused).</summary>
    private static async Task<bool> RefusesWritesAsync(string connectionString)
    {
        try
        {
            await using var connection = new MySqlConnection(connectionString);
            await connection.OpenAsync();
            await using var insert = new MySqlCommand("INSERT INTO probe (n) VALUES (-1)", connection);
            await insert.ExecuteNonQueryAsync();
            return false;
        }
        catch (MySqlException)
        {
            return true;
        }
    }

    private sealed record Ack(long N, DateTimeOffset At);

    private sealed record Gap(double Milliseconds, (DateTimeOffset From, DateTimeOffset To) Window);

    private sealed record ProbeResult(IReadOnlyList<Ack> Acks, int ProbeErrors, IReadOnlyList<string> ProbeErrorSamples, long LoadCommitted, int LoadErrors, IReadOnlyList<string> LoadErrorSamples);
}
