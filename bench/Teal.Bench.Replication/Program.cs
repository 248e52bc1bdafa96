using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Npgsql;
using Teal.Bench.Replication;
using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.Postgres.Engines;
using Teal.Postgres.Instances;
using Teal.Postgres.Replication;

// Usage: Teal.Bench.Replication [--scale N] [--clients N] [--seconds N]
var options = BenchOptions.Parse(args);
var catalog = new PostgresEngineCatalog(EngineOptions.FromEnvironment());
var managed = new ManagedPostgres(catalog);
await using var servers = await BenchServers.StartAsync(managed, cancellationToken: default);
var blue = servers.Blue;
var green = servers.Green;
const string database = "bench";

await blue.ExecuteAsync($"CREATE DATABASE {database}");
var pgbench = Path.Combine((await catalog.ResolveAsync("15", default)).BinDirectory, "pgbench");
var init = Stopwatch.StartNew();
await blue.RunToolAsync(pgbench, ["-i", "-s", options.Scale.ToString(CultureInfo.InvariantCulture), "-q", database]);
Log($"pgbench -i -s {options.Scale}: {init.Elapsed.TotalSeconds:0.0} s");
// pgbench_history has no key; it is insert-only, so a full replica identity costs nothing.
await blue.ExecuteAsync("ALTER TABLE pgbench_history REPLICA IDENTITY FULL", database);

var spec = new LinkSpec("teal_bench", blue.Connection(database), green.Connection(database));
await using var link = new PostgresReplicationLink(spec, catalog, TimeProvider.System);

var create = Stopwatch.StartNew();
var report = await link.CheckPrerequisitesAsync(default);
if (!report.Passed)
{
    throw new InvalidOperationException("prerequisites failed: " + string.Join("; ", report.Failures.Select(f => f.Message)));
}

await link.CopySchemaAsync(default);
var schemaSeconds = create.Elapsed.TotalSeconds;
await link.StartReplicationAsync(default);
ReplicationSnapshot snapshot;
do
{
    await Task.Delay(100);
    await link.WriteHeartbeatAsync(default);
    snapshot = await link.ReadStatusAsync(default);
}
while (snapshot.State != ReplicationState.Replicating || snapshot.LagBytes > 1024 * 1024);
var availableSeconds = create.Elapsed.TotalSeconds;
Log($"AVAILABLE after {availableSeconds:0.0} s (schema {schemaSeconds:0.0} s)");

var verify = await link.VerifyAsync(null, default);
Log($"verify: {verify.RowsPerSide} rows/side in {verify.Seconds:0.00} s, matches {verify.Matches}");

// Lag under TPC-B load: heartbeat and status every 100 ms, as the monitor would at 10 Hz.
var lags = new List<double>();
var replayLags = new List<double>();
using var stopSampling = new CancellationTokenSource();
var sampler = Task.Run(async () =>
{
    await using var blueConn = await blue.OpenAsync(database);
    using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(100));
    while (await timer.WaitForNextTickAsync(stopSampling.Token).AsTask().ContinueWith(t => !t.IsCanceled && t.Result, TaskScheduler.Default))
    {
        await link.WriteHeartbeatAsync(default);
        var s = await link.ReadStatusAsync(default);
        if (s.LagSeconds is { } lag)
        {
            lags.Add(lag);
        }

        await using var cmd = new NpgsqlCommand("SELECT extract(epoch FROM replay_lag)::float8 FROM pg_stat_replication WHERE application_name = 'teal_bench'", blueConn);
        if (await cmd.ExecuteScalarAsync() is double replay)
        {
            replayLags.Add(replay);
        }
    }
});
var load = await blue.RunToolAsync(pgbench, ["-c", options.Clients.ToString(CultureInfo.InvariantCulture), "-j", "2", "-T", options.Seconds.ToString(CultureInfo.InvariantCulture), "-n", database]);
await stopSampling.CancelAsync();
await sampler;
var tps = BenchServers.ParseTps(load.StandardOutput);
Log($"pgbench TPC-B {options.Clients} clients {options.Seconds} s: {tps:0} tps, {lags.Count} lag samples");

var drained = Stopwatch.StartNew();
var position = await link.MarkFinalPositionAsync(default);
await link.WaitForPositionAsync(position, default);
var afterLoad = await link.VerifyAsync(null, default);
await link.RemoveAsync(default);

var result = new
{
    benchmark = "replication",
    blue = blue.Version,
    green = green.Version,
    machine = new { cores = Environment.ProcessorCount, note = "shared machine; other workers were running builds and tests during this run" },
    pgbenchScale = options.Scale,
    timeToAvailableSeconds = Math.Round(availableSeconds, 2),
    schemaCopySeconds = Math.Round(schemaSeconds, 2),
    verify = new { rowsPerSide = verify.RowsPerSide, seconds = Math.Round(verify.Seconds, 3), rowsPerSecondPerSide = Math.Round(verify.RowsPerSecond), matches = verify.Matches },
    load = new { clients = options.Clients, seconds = options.Seconds, tps = Math.Round(tps, 1) },
    lagSeconds = new { samples = lags.Count, p50 = BenchServers.Percentile(lags, 0.50), p99 = BenchServers.Percentile(lags, 0.99), max = lags.Count == 0 ? 0 : Math.Round(lags.Max(), 3) },
    replayLagSeconds = new { samples = replayLags.Count, p50 = BenchServers.Percentile(replayLags, 0.50), p99 = BenchServers.Percentile(replayLags, 0.99) },
    catchUpAfterLoadSeconds = Math.Round(drained.Elapsed.TotalSeconds - afterLoad.Seconds, 3),
    verifyAfterLoad = new { rowsPerSide = afterLoad.RowsPerSide, rowsPerSecondPerSide = Math.Round(afterLoad.RowsPerSecond), matches = afterLoad.Matches },
};
Console.WriteLine(JsonSerializer.Serialize(result, new JsonSerializerOptions { WriteIndented = true }));

static void Log(string message) => Console.Error.WriteLine($"[{DateTime.UtcNow:HH:mm:ss}] {message}");
