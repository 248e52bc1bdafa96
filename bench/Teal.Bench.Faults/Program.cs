using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Teal.Bench.Faults;
using Teal.Bench.Switchover;
using Teal.Testing.Processes;

// Usage: Teal.Bench.Faults [--rounds N] [--seed S] [--max-crash-ms MS]
// One JSON document on stdout; progress on stderr. bench/faults/README.md says how to read it.
var rounds = 50;
var seed = Environment.TickCount;
var maxCrashMs = 1500;
for (var i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--rounds":
            rounds = int.Parse(args[++i], CultureInfo.InvariantCulture);
            break;
        case "--seed":
            seed = int.Parse(args[++i], CultureInfo.InvariantCulture);
            break;
        case "--max-crash-ms":
            maxCrashMs = int.Parse(args[++i], CultureInfo.InvariantCulture);
            break;
        default:
            await Console.Error.WriteLineAsync($"unknown argument {args[i]}; usage: [--rounds N] [--seed S] [--max-crash-ms MS]");
            return 2;
    }
}

var started = DateTimeOffset.UtcNow;
var random = new Random(seed);
var results = new List<RoundResult>();
await using (var teal = await TealProcess.StartAsync())
{
    var round = new FaultRound(teal, new BenchCli(teal), random, maxCrashMs, Log);
    for (var i = 1; i <= rounds; i++)
    {
        var result = await round.RunAsync(i);
        results.Add(result);
        Log($"round {i}: {result.Outcome}, converged {result.Converged}, two writable sides {result.WritableSides?.TwoWritableSides}, missing {result.AcknowledgedWritesMissing}");
    }
}

var finished = results.Where(r => r.Outcome != "BENCH_ERROR").ToList();
var document = new
{
    bench = "faults",
    startedAt = started,
    finishedAt = DateTimeOffset.UtcNow,
    seed,
    maxCrashMs,
    machine = new { cores = Environment.ProcessorCount, loadAverage = LoadAverage() },
    bars = new { twoWritableSides = 0, acknowledgedWritesMissing = 0, roundsNotConverged = 0 },
    summary = new
    {
        rounds = results.Count,
        benchErrors = results.Count - finished.Count,
        completed = finished.Count(r => r.Outcome == "SWITCHOVER_COMPLETED"),
        rolledBack = finished.Count(r => r.Outcome is "SWITCHOVER_FAILED" or "AVAILABLE"),
        roundsWithTwoWritableSides = finished.Count(r => r.WritableSides?.TwoWritableSides == true),
        acknowledgedWritesMissing = finished.Sum(r => r.AcknowledgedWritesMissing),
        roundsNotConverged = finished.Count(r => !r.Converged),
        roundsEndpointNotServing = finished.Count(r => !r.EndpointServesAfterRecovery),
    },
    allBarsMet = finished.Count == results.Count && results.Count >= 50
        && finished.All(r => r.Converged && r.WritableSides?.TwoWritableSides == false && r.AcknowledgedWritesMissing == 0),
    rounds = results,
};
var options = new JsonSerializerOptions(JsonSerializerDefaults.Web) { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.Never };
Console.WriteLine(JsonSerializer.Serialize(document, options));
return 0;

static void Log(string message) => Console.Error.WriteLine($"faults-bench {DateTime.UtcNow:HH:mm:ss}: {message}");

static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";
