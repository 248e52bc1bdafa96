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

// Usage: Teal.Bench.Replication [--scale N] [--clients N] [--seconds N] [--large-rows N] [--copy-parallelism N]
var options = BenchOptions.Parse(args);
var catalog = new PostgresEngineCatalog(PostgresEngineOptions.FromEnvironment());
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

// The large table: about 150 bytes a row, an integer key and one secondary index.
var generate = Stopwatch.StartNew();
await blue.ExecuteAsync(
    $"""
    CREATE TABLE large_orders (id bigint PRIMARY KEY, customer int NOT NULL, amount numeric(12, 2) NOT NULL, status text NOT NULL, note text NOT NULL, created_at timestamptz NOT NULL);
    INSERT INTO large_orders SELECT g, g % 100000, (g % 100000) / 100.0, (ARRAY['new', 'paid', 'shipped', 'returned'])[1 + g % 4], md5(g::text) || md5((g * 7)::text), timestamptz '2024-01-01' + g * interval '1 second' FROM generate_series(1, {options.LargeRows.ToString(CultureInfo.InvariantCulture)}) g;
    CREATE INDEX large_orders_customer ON large_orders (customer);
    """,
    database);
await blue.ExecuteAsync("VACUUM ANALYZE large_orders", database);
long largeBytes;
await using (var sizes = await blue.OpenAsync(database))
await using (var cmd = new NpgsqlCommand("SELECT pg_table_size('large_orders')", sizes))
{
    largeBytes = (long)(await cmd.ExecuteScalarAsync())!;
}

Log($"large_orders: {options.LargeRows} rows, {largeBytes / 1048576.0:0} MB in {generate.Elapsed.TotalSeconds:0} s");

var blueControl = ManagedPostgres.GeneratePassword();

// The same blue copied twice, one after the other: PostgreSQL's subscription copy, then Teal's parallel copy.
// One deployment of blue at a time: the first is removed (its Teal objects on blue with it) before the second.
var native = await CreateAsync("teal_native", servers.NativeGreen, copyParallelism: 1);
await using (var nativeLink = native.Link)
{
    await nativeLink.RemoveAsync(default);
}

var parallel = await CreateAsync("teal_bench", green, options.CopyParallelism);
await using var link = parallel.Link;
var verify = parallel.Verify;
var availableSeconds = parallel.AvailableSeconds;

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
    largeTable = new { rows = options.LargeRows, megabytes = Math.Round(largeBytes / 1048576.0), copyParallelism = options.CopyParallelism },
    loadAverageAtEnd = LoadAverage(),
    native = native.Figures(largeBytes),
    parallel = parallel.Figures(largeBytes),
    largeTableSpeedup = Math.Round(native.LargeSeconds / parallel.LargeSeconds, 2),
    timeToAvailableSeconds = Math.Round(availableSeconds, 2),
    verify = new { rowsPerSide = verify.RowsPerSide, seconds = Math.Round(verify.Seconds, 3), rowsPerSecondPerSide = Math.Round(verify.RowsPerSecond), matches = verify.Matches },
    load = new { clients = options.Clients, seconds = options.Seconds, tps = Math.Round(tps, 1) },
    lagSeconds = new { samples = lags.Count, p50 = BenchServers.Percentile(lags, 0.50), p99 = BenchServers.Percentile(lags, 0.99), max = lags.Count == 0 ? 0 : Math.Round(lags.Max(), 3) },
    replayLagSeconds = new { samples = replayLags.Count, p50 = BenchServers.Percentile(replayLags, 0.50), p99 = BenchServers.Percentile(replayLags, 0.99) },
    catchUpAfterLoadSeconds = Math.Round(drained.Elapsed.TotalSeconds - afterLoad.Seconds, 3),
    verifyAfterLoad = new { rowsPerSide = afterLoad.RowsPerSide, rowsPerSecondPerSide = Math.Round(afterLoad.RowsPerSecond), matches = afterLoad.Matches },
};
Console.WriteLine(JsonSerializer.Serialize(result, new JsonSerializerOptions { WriteIndented = true }));

// Prerequisites, schema, initial copy, ANALYZE_GREEN and catch-up, as teal create runs them; then the first verify.
async Task<CreateRun> CreateAsync(string name, BenchServer target, int copyParallelism)
{
    var spec = new LinkSpec(name, blue.Connection(database), target.Connection(database))
    {
        CopyParallelism = copyParallelism,
        // Teal's own login on each side (the fence leaves only that one); both links share blue's.
        BlueControlPassword = blueControl,
        GreenControlPassword = ManagedPostgres.GeneratePassword(),
    };
    var created = new PostgresReplicationLink(spec, catalog, TimeProvider.System);
    var clock = Stopwatch.StartNew();
    var checks = await created.CheckPrerequisitesAsync(default);
    if (!checks.Passed)
    {
        throw new InvalidOperationException("prerequisites failed: " + string.Join("; ", checks.Failures.Select(f => f.Message)));
    }

    await created.CopySchemaAsync(default);
    var schema = clock.Elapsed.TotalSeconds;
    await created.StartReplicationAsync(default);
    double? large = null;
    ReplicationSnapshot status;
    do
    {
        await Task.Delay(200);
        await created.WriteHeartbeatAsync(default);
        status = await created.ReadStatusAsync(default);
        if (status.State == ReplicationState.Stopped)
        {
            throw new InvalidOperationException($"{name}: replication stopped: {status.Reason}");
        }

        if (large is null && status.Tables.FirstOrDefault(t => t.Table == "public.large_orders") is { State: TableCopyState.Copied or TableCopyState.Ready })
        {
            large = clock.Elapsed.TotalSeconds - schema;
        }
    }
    while (status.State != ReplicationState.Replicating || status.LagBytes > 1024 * 1024);
    var copied = clock.Elapsed.TotalSeconds - schema;
    await created.PrepareGreenAsync(null, default);
    var available = clock.Elapsed.TotalSeconds;
    Log($"{name} (copy parallelism {copyParallelism}): copy {copied:0.0} s (large table {large ?? copied:0.0} s), AVAILABLE after {available:0.0} s");
    var first = await created.VerifyAsync(null, default);
    Log($"{name}: first verify {first.RowsPerSide} rows/side in {first.Seconds:0.0} s ({first.RowsPerSecond:0} rows/s per side), matches {first.Matches}");
    return new CreateRun(created, copyParallelism, schema, copied, large ?? copied, available, first);
}

static double[] LoadAverage() =>
    File.ReadAllText("/proc/loadavg").Split(' ').Take(3).Select(v => double.Parse(v, CultureInfo.InvariantCulture)).ToArray();

static void Log(string message) => Console.Error.WriteLine($"[{DateTime.UtcNow:HH:mm:ss}] {message}");

internal sealed record CreateRun(PostgresReplicationLink Link, int CopyParallelism, double SchemaSeconds, double CopySeconds, double LargeSeconds, double AvailableSeconds, VerifyReport Verify)
{
    public object Figures(long largeBytes) => new
    {
        copyParallelism = CopyParallelism,
        schemaSeconds = Math.Round(SchemaSeconds, 1),
        copySeconds = Math.Round(CopySeconds, 1),
        largeTableSeconds = Math.Round(LargeSeconds, 1),
        largeTableMegabytesPerSecond = Math.Round(largeBytes / 1048576.0 / LargeSeconds, 1),
        timeToAvailableSeconds = Math.Round(AvailableSeconds, 1),
        firstVerify = new { rowsPerSide = Verify.RowsPerSide, seconds = Math.Round(Verify.Seconds, 1), rowsPerSecondPerSide = Math.Round(Verify.RowsPerSecond), matches = Verify.Matches },
    };
}
