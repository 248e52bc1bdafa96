using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Teal.Bench.Switchover;

// Usage: Teal.Bench.Switchover [--switchovers N] [--endpoints proxy,proxy-sessions,proxy-prepared,pgbouncer,mariadb-proxy]
//          [--baseline FILE] [--mariadb-baseline FILE]
//   proxy: Teal's proxy, pgbench -C; proxy-sessions / proxy-prepared: Teal's proxy, pgbench keeping
//   its connections (-M simple / -M prepared), which the proxy moves to green at the switchover.
//   --baseline: the JSON of bench/switchover/handrolled-pgbouncer.sh from the same run; its gaps
//   are the reference Teal must beat (PRODUCT.md §11) and it is embedded in the output.
//   proxy-two-processes: teal serve --endpoints external with two `teal proxy` processes; the probe
//   writes through one, pgbench (sessions kept) through the other; both are paused, flipped and resumed.
//   mariadb-proxy: MariaDB 10.11 blue/green through Teal's proxy (MariaDbSwitchoverBench);
//   --mariadb-baseline: handrolled-haproxy-mariadb.sh's JSON, its reference (embedded as handrolledMariaDb).
//        Teal.Bench.Switchover --loop N [--idle M]
//   N switchovers and switchbacks on one pair under load (SwitchbackLoopBench): each one's gap and lost writes;
//   --idle: M more connections held open and idle through the endpoint all along.
// One JSON document on stdout; progress on stderr.
var switchovers = 10;
int? loop = null;
var idle = 0;
string[] endpoints = ["proxy", "proxy-sessions", "proxy-prepared", "pgbouncer"];
string? baselineFile = null;
string? mariaDbBaselineFile = null;
for (var i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--switchovers":
            switchovers = int.Parse(args[++i], CultureInfo.InvariantCulture);
            break;
        case "--endpoints":
            endpoints = args[++i].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            break;
        case "--baseline":
            baselineFile = args[++i];
            break;
        case "--loop":
            loop = int.Parse(args[++i], CultureInfo.InvariantCulture);
            break;
        case "--idle":
            idle = int.Parse(args[++i], CultureInfo.InvariantCulture);
            break;
        case "--mariadb-baseline":
            mariaDbBaselineFile = args[++i];
            break;
        default:
            await Console.Error.WriteLineAsync($"unknown argument {args[i]}; usage: [--switchovers N] [--endpoints proxy,pgbouncer] [--baseline FILE]");
            return 2;
    }
}

string[] kinds = ["proxy", "proxy-sessions", "proxy-prepared", "pgbouncer", MariaDbSwitchoverBench.Kind, SwitchoverBench.TwoProxies];
if (endpoints.Except(kinds).FirstOrDefault() is { } unknown)
{
    await Console.Error.WriteLineAsync($"unknown endpoint kind {unknown}: one of {string.Join(", ", kinds)}");
    return 2;
}

var options = new JsonSerializerOptions(JsonSerializerDefaults.Web) { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.Never };

// Nine logins per cutover (pgbench's 8 sessions and the probe) on the new writer: what they cost here.
LoginCost? loginCost = null;
if (loop is not null || endpoints.Any(e => e != MariaDbSwitchoverBench.Kind))
{
    loginCost = await LoginCost.MeasureAsync(atOnce: 9);
    Log($"a PostgreSQL login on this machine: {loginCost.SequentialMedianMs} ms alone, {loginCost.AtOnceMedianMs} ms until {loginCost.AtOnce} started together are in");
}
if (loop is { } iterations)
{
    var loopStarted = DateTimeOffset.UtcNow;
    var result = await new SwitchbackLoopBench(iterations, idle, Log).RunAsync();
    Console.WriteLine(JsonSerializer.Serialize(new { bench = "switchback-loop", startedAt = loopStarted, finishedAt = DateTimeOffset.UtcNow, machine = new { cores = Environment.ProcessorCount, loadAverage = LoadAverage(), postgresLogin = loginCost }, codeWarmUp = "on, finished before the first switchover", loop = result }, options));
    return result.AllCompleted && result.NoLostWrites ? 0 : 1;
}

JsonElement? handrolled = baselineFile is null ? null : JsonDocument.Parse(await File.ReadAllTextAsync(baselineFile)).RootElement.Clone();
var baseline = handrolled is { } h ? Baseline.From(h) : null;
JsonElement? handrolledMariaDb = mariaDbBaselineFile is null ? null : JsonDocument.Parse(await File.ReadAllTextAsync(mariaDbBaselineFile)).RootElement.Clone();
var mariaDbBaseline = handrolledMariaDb is { } m ? Baseline.From(m) : null;
var started = DateTimeOffset.UtcNow;
var results = new List<KindResult>();
foreach (var endpoint in endpoints)
{
    results.Add(endpoint == MariaDbSwitchoverBench.Kind
        ? await new MariaDbSwitchoverBench(switchovers, mariaDbBaseline, Log).RunAsync()
        : await new SwitchoverBench(endpoint, switchovers, baseline, Log).RunAsync());
}

var document = new
{
    bench = "switchover",
    startedAt = started,
    finishedAt = DateTimeOffset.UtcNow,
    machine = new { cores = Environment.ProcessorCount, loadAverage = LoadAverage(), postgresLogin = loginCost },
    switchoversPerEndpoint = switchovers,
    // teal serve and teal proxy as operators run them: their code warm-up on and done before round 1.
    codeWarmUp = "on, finished before the first switchover",
    bars = new { maxGapMs = 500, medianGapMs = 200, belowHandrolled = true, lostWrites = 0, clientErrorsThroughPgBouncer = 0 },
    // Every kind met its bars against a baseline of its own engine, measured in this run.
    allBarsMet = results.All(r => r.Bars.Met && (r.Endpoint == MariaDbSwitchoverBench.Kind ? mariaDbBaseline : baseline) is not null),
    endpoints = results,
    handrolled,
    handrolledMariaDb,
};
Console.WriteLine(JsonSerializer.Serialize(document, options));
return 0;

static void Log(string message) => Console.Error.WriteLine($"switchover-bench {DateTime.UtcNow:HH:mm:ss}: {message}");

// The machine is shared; the load average at the end says how much the gaps may be inflated by it.
static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";
