using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Teal.Bench.Switchover;

// Usage: Teal.Bench.Switchover [--switchovers N] [--endpoints proxy,proxy-sessions,proxy-prepared,pgbouncer] [--baseline FILE]
//   proxy: Teal's proxy, pgbench -C; proxy-sessions / proxy-prepared: Teal's proxy, pgbench keeping
//   its connections (-M simple / -M prepared), which the proxy moves to green at the switchover.
//   --baseline: the JSON of bench/switchover/handrolled-pgbouncer.sh from the same run; its gaps
//   are the reference Teal must beat (PRODUCT.md §11) and it is embedded in the output.
//        Teal.Bench.Switchover --loop N
//   N switchovers and switchbacks on one pair under load (SwitchbackLoopBench): each one's gap and lost writes.
// One JSON document on stdout; progress on stderr.
var switchovers = 10;
int? loop = null;
string[] endpoints = ["proxy", "proxy-sessions", "proxy-prepared", "pgbouncer"];
string? baselineFile = null;
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
        default:
            await Console.Error.WriteLineAsync($"unknown argument {args[i]}; usage: [--switchovers N] [--endpoints proxy,pgbouncer] [--baseline FILE]");
            return 2;
    }
}

string[] kinds = ["proxy", "proxy-sessions", "proxy-prepared", "pgbouncer"];
if (endpoints.Except(kinds).FirstOrDefault() is { } unknown)
{
    await Console.Error.WriteLineAsync($"unknown endpoint kind {unknown}: one of {string.Join(", ", kinds)}");
    return 2;
}

var options = new JsonSerializerOptions(JsonSerializerDefaults.Web) { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.Never };
if (loop is { } iterations)
{
    var loopStarted = DateTimeOffset.UtcNow;
    var result = await new SwitchbackLoopBench(iterations, Log).RunAsync();
    Console.WriteLine(JsonSerializer.Serialize(new { bench = "switchback-loop", startedAt = loopStarted, finishedAt = DateTimeOffset.UtcNow, machine = new { cores = Environment.ProcessorCount, loadAverage = LoadAverage() }, loop = result }, options));
    return result.AllCompleted && result.NoLostWrites ? 0 : 1;
}

JsonElement? handrolled = baselineFile is null ? null : JsonDocument.Parse(await File.ReadAllTextAsync(baselineFile)).RootElement.Clone();
var baseline = handrolled is { } h ? Baseline.From(h) : null;
var started = DateTimeOffset.UtcNow;
var results = new List<KindResult>();
foreach (var endpoint in endpoints)
{
    results.Add(await new SwitchoverBench(endpoint, switchovers, baseline, Log).RunAsync());
}

var document = new
{
    bench = "switchover",
    startedAt = started,
    finishedAt = DateTimeOffset.UtcNow,
    machine = new { cores = Environment.ProcessorCount, loadAverage = LoadAverage() },
    switchoversPerEndpoint = switchovers,
    bars = new { maxGapMs = 500, medianGapMs = 200, belowHandrolled = true, lostWrites = 0, clientErrorsThroughPgBouncer = 0 },
    allBarsMet = results.All(r => r.Bars.Met) && baseline is not null,
    endpoints = results,
    handrolled,
};
Console.WriteLine(JsonSerializer.Serialize(document, options));
return 0;

static void Log(string message) => Console.Error.WriteLine($"switchover-bench {DateTime.UtcNow:HH:mm:ss}: {message}");

// The machine is shared; the load average at the end says how much the gaps may be inflated by it.
static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";
