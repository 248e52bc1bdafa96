using System.Globalization;
using Npgsql;
using Teal.Postgres.Instances;
using Teal.Testing;
using Teal.Testing.Load;

namespace Teal.Bench.Switchover;

/// <summary>
/// The way back under load, repeatedly on one pair (Vitess runs the same loop for MoveTables /
/// ReverseTraffic): one PostgreSQL 15 blue, one deployment to 17 with reverse replication, then
/// N iterations of switchover and switchback through Teal's proxy while pgbench (8 clients kept
/// across the cutovers) and the probe write. Each iteration reports the gap at the switchover
/// and at the switchback, and the acknowledged probe writes missing on the writer after each.
/// </summary>
internal sealed class SwitchbackLoopBench(int iterations, int idleConnections, Action<string> log)
{
    private const string Database = "app";
    private const string AppUser = "app_user";
    private const string AppPassword = "app-secret-for-bench";
    private const string Name = "app";
    private const string Deployment = "loop";
    private static readonly TimeSpan Load = TimeSpan.FromSeconds(2);

    public async Task<LoopResult> RunAsync()
    {
        await using var teal = await WarmTeal.StartServeAsync(log);
        var cli = new BenchCli(teal);
        await using var blue = await PostgresServer.StartAsync("15");
        await blue.ExecuteAsync($"CREATE ROLE {AppUser} LOGIN PASSWORD '{AppPassword}'");
        await blue.ExecuteAsync($"CREATE DATABASE {Database}");
        await blue.ExecuteAsync(ProbeWriter.CreateTableSql, Database);
        await PgBench.InitializeAsync(blue.Host, blue.Port, blue.User, blue.Password, Database, scale: 8);
        await blue.ExecuteAsync("ALTER TABLE pgbench_history REPLICA IDENTITY FULL", Database);
        await blue.ExecuteAsync($"GRANT ALL ON ALL TABLES IN SCHEMA public TO {AppUser}; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {AppUser}", Database);
        var port = ManagedPostgres.FreePort();
        await cli.MustAsync(["instance", "add", Name, "--connection", blue.Uri(Database), "--endpoint", $"127.0.0.1:{port}"], TimeSpan.FromMinutes(2));
        log($"loop: teal create {Deployment} (15 → 17)");
        await cli.MustAsync(["create", Deployment, "--source", Name, "--target-engine-version", "17", "--wait"], TimeSpan.FromMinutes(10));

        var endpoint = new NpgsqlConnectionStringBuilder { Host = "127.0.0.1", Port = port, Username = AppUser, Password = AppPassword, Database = Database }.ConnectionString;
        await using var probe = new ProbeWriter(endpoint);
        probe.Start();

        // A pool's spare connections: open through the endpoint, never used until the end, when
        // each must answer from the writer the last cutover left (moved each time, not closed).
        var idle = new List<NpgsqlConnection>();
        for (var i = 0; i < idleConnections; i++)
        {
            var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(endpoint) { Pooling = false, ApplicationName = "bench-idle" }.ConnectionString);
            await connection.OpenAsync();
            idle.Add(connection);
        }

        using var pgbench = PgbenchLoad.Start("127.0.0.1", port, AppUser, AppPassword, Database, 8, connectPerTransaction: false);
        var runs = new List<LoopIteration>();
        string? error = null;
        for (var i = 1; i <= iterations && error is null; i++)
        {
            await Task.Delay(Load);
            var over = await CutOverAsync(cli, probe, "switchover", "SWITCHOVER_COMPLETED");
            await Task.Delay(Load);
            var back = over.Error is null ? await CutOverAsync(cli, probe, "switchback", "AVAILABLE") : new Cutover(null, null, "switchback not tried");
            var lost = await LostAsync(cli, probe);
            error = over.Error ?? back.Error;
            runs.Add(new LoopIteration(i, over.GapMs, back.GapMs, over.WritePauseMs, back.WritePauseMs, lost, error)
            {
                Switchover = over.Placement,
                Switchback = back.Placement,
            });
            log($"loop #{i}: switchover gap {Ms(over.GapMs)} ({over.Placement}), switchback gap {Ms(back.GapMs)} ({back.Placement}), lost {lost}{(error is null ? string.Empty : ", " + error)}");
        }

        await Task.Delay(Load);
        await probe.StopAsync();
        var load = await pgbench.StopAsync();
        var finalLost = await LostAsync(cli, probe);
        var idleErrors = 0;
        foreach (var connection in idle)
        {
            try
            {
                await using var command = new NpgsqlCommand("SELECT 1", connection);
                await command.ExecuteScalarAsync();
            }
            catch (NpgsqlException)
            {
                idleErrors++;
            }

            await connection.DisposeAsync();
        }

        // teal serve's own log (the proxy's drain and per-session move timings), for reading where a gap went.
        var logFile = Path.Combine(Path.GetTempPath(), "teal-bench-loop-serve.log");
        await File.WriteAllTextAsync(logFile, teal.Log);
        log($"loop: teal serve's log in {logFile}");
        return new LoopResult(iterations, runs, probe.Acknowledged.Count, finalLost, probe.Errors.Count, load.AbortedClients, Median(runs.Select(r => r.SwitchoverGapMs)), Median(runs.Select(r => r.SwitchbackGapMs)),
            runs.Select(r => r.SwitchoverGapMs).Max(), runs.Select(r => r.SwitchbackGapMs).Max())
        {
            PgbenchErrors = load.ErrorLines,
            IdleConnections = idleConnections,
            IdleConnectionErrors = idleErrors,
            MovedSessions = MovedSessions.FromLog(teal.Log),
        };
    }

    /// <summary>One cutover; a refusal while replication settles after the previous one is retried for up to a minute.</summary>
    private static async Task<Cutover> CutOverAsync(BenchCli cli, ProbeWriter probe, string verb, string expected)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(1);
        while (true)
        {
            var result = await cli.RunAsync([verb, Deployment, "--wait", "--output", "json"], TimeSpan.FromMinutes(5));
            var shown = await cli.ShowAsync(Deployment);
            var status = shown.GetProperty("status").GetString() ?? string.Empty;
            if (result.ExitCode == 0 && string.Equals(status.Replace("_", string.Empty, StringComparison.Ordinal), expected.Replace("_", string.Empty, StringComparison.Ordinal), StringComparison.OrdinalIgnoreCase))
            {
                var switchover = shown.GetProperty("switchover");
                var paused = switchover.GetProperty("pausedAt").GetDateTimeOffset();
                var resumed = switchover.GetProperty("resumedAt").GetDateTimeOffset();
                var gap = probe.LongestGapOverlapping(paused, resumed);
                var (phases, pause) = SwitchoverBench.ParseSwitchover(switchover);
                var (beforePause, afterResume) = SwitchoverBench.PlaceGap(probe.LongestGapOverlappingWindow(paused, resumed), paused, resumed);
                return new Cutover(gap is { } g ? Math.Round(g.TotalMilliseconds, 1) : null, pause, null)
                {
                    Placement = new GapPlacement(beforePause, afterResume, phases.GroupBy(t => t.Step).ToDictionary(g => g.Key, g => g.Last().Milliseconds)),
                };
            }

            if (!result.Stderr.Contains("refused", StringComparison.Ordinal) || DateTime.UtcNow > deadline)
            {
                return new Cutover(null, null, $"{verb} failed ({status}): {result.Stderr.Trim()}");
            }

            await Task.Delay(TimeSpan.FromSeconds(2));
        }
    }

    /// <summary>Acknowledged probe numbers missing on the writer behind the application's name.</summary>
    private static async Task<long> LostAsync(BenchCli cli, ProbeWriter probe)
    {
        var acked = probe.Acknowledged;
        await using var connection = new NpgsqlConnection(await cli.InstanceConnectionAsync(Name, Database));
        await connection.OpenAsync();
        await using var count = new NpgsqlCommand($"SELECT count(*) FROM {ProbeWriter.Table} WHERE n = ANY($1)", connection) { Parameters = { new() { Value = acked.ToArray() } } };
        return acked.Count - (long)(await count.ExecuteScalarAsync())!;
    }

    private static string Ms(double? value) => value is { } v ? v.ToString("0", CultureInfo.InvariantCulture) + " ms" : "?";

    private static double? Median(IEnumerable<double?> values)
    {
        var sorted = values.Where(v => v is not null).Select(v => v!.Value).Order().ToList();
        return sorted.Count == 0 ? null : sorted[sorted.Count / 2];
    }

    private sealed record Cutover(double? GapMs, double? WritePauseMs, string? Error)
    {
        public GapPlacement? Placement { get; init; }
    }
}

/// <summary>
/// Where one cutover's gap went: from the probe's last commit to the pause
/// (<see cref="BeforePauseMs"/>), the steps inside the pause, and from the resume to the probe's
/// first commit on the new writer (<see cref="AfterResumeMs"/>: the moved session logging in there).
/// </summary>
public sealed record GapPlacement(double? BeforePauseMs, double? AfterResumeMs, IReadOnlyDictionary<string, double> PhasesMs)
{
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"before pause {BeforePauseMs:0}, after resume {AfterResumeMs:0}; ") + string.Join(' ', PhasesMs.Select(p => string.Create(CultureInfo.InvariantCulture, $"{p.Key}={p.Value:0}")));
}

/// <summary>One switchover and switchback of the loop.</summary>
public sealed record LoopIteration(int Iteration, double? SwitchoverGapMs, double? SwitchbackGapMs, double? SwitchoverWritePauseMs, double? SwitchbackWritePauseMs, long LostWrites, string? Error)
{
    /// <summary>The switchover's gap placed against its pause, and its steps' times.</summary>
    public GapPlacement? Switchover { get; init; }

    public GapPlacement? Switchback { get; init; }
}

/// <summary>The loop's JSON: every iteration, and over all of them the gaps and lost writes.</summary>
public sealed record LoopResult(int Iterations, IReadOnlyList<LoopIteration> Runs, long ProbeAcked, long LostWritesAtEnd, int ProbeErrors, int PgbenchAbortedClients, double? MedianSwitchoverGapMs, double? MedianSwitchbackGapMs, double? MaxSwitchoverGapMs, double? MaxSwitchbackGapMs)
{
    /// <summary>pgbench's own lines naming an error (what made a client abort).</summary>
    public IReadOnlyList<string> PgbenchErrors { get; init; } = [];

    /// <summary>Connections held open and idle through the endpoint all along (<c>--idle</c>), and how many of them failed their query at the end.</summary>
    public int IdleConnections { get; init; }

    public int IdleConnectionErrors { get; init; }

    /// <summary>Where the moved sessions' time went, over every move of the run (teal serve's log).</summary>
    public MovedSessions? MovedSessions { get; init; }

    public bool AllCompleted => Runs.Count == Iterations && Runs.All(r => r.Error is null);

    public bool NoLostWrites => LostWritesAtEnd == 0 && Runs.All(r => r.LostWrites == 0);
}

/// <summary>
/// Medians over every session a cutover moved, from the proxy's one log line per move: reaching
/// a transaction boundary after the drain asked, reading its state on the side it leaves, its
/// login on the new writer (started before the pause over a fenced green's local socket, or once
/// that side's logins were back, or at the resume), and how long after the resume it went on.
/// <see cref="LoggedInBeforeResume"/> counts the logins before the pause too.
/// </summary>
public sealed record MovedSessions(int Moves, int LoggedInBeforeResume, int StateReadAhead, double BoundaryMs, double StateReadMs, double LoginMs, double AfterResumeMs)
{
    /// <summary>Logins made before the pause, on a still-fenced green over its local socket.</summary>
    public int LoggedInBeforePause { get; init; }

    private static readonly System.Text.RegularExpressions.Regex Line = new(
        @"reaching a transaction boundary (?<boundary>[0-9.]+) ms, reading its state (?<state>[0-9.]+) ms \((?<ahead>read ahead)?[^)]*\), .* login (?<login>[0-9.]+) ms started (?<when>before|at) the (?<point>resume|pause)[^,]*, .*going on (?<after>[0-9.]+) ms after the resume",
        System.Text.RegularExpressions.RegexOptions.CultureInvariant);

    public static MovedSessions? FromLog(string log)
    {
        var moves = Line.Matches(log);
        if (moves.Count == 0)
        {
            return null;
        }

        double MedianOf(string group) => Median(moves.Select(m => double.Parse(m.Groups[group].Value, CultureInfo.InvariantCulture)));
        return new MovedSessions(moves.Count, moves.Count(m => m.Groups["when"].Value == "before"), moves.Count(m => m.Groups["ahead"].Success), MedianOf("boundary"), MedianOf("state"), MedianOf("login"), MedianOf("after"))
        {
            LoggedInBeforePause = moves.Count(m => m.Groups["point"].Value == "pause"),
        };
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted[sorted.Count / 2];
    }
}
