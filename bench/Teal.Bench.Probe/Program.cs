using System.Runtime.InteropServices;
using System.Text.Json;
using Npgsql;
using Teal.Bench.Probe;

// teal-bench-probe CONNECTION-STRING INTERVAL-MS OUTPUT-FILE
//
// Commits `INSERT INTO probe (n) VALUES (n)` with n = 1, 2, 3, … every INTERVAL-MS through the
// endpoint under test, one connection, reconnecting after any error. Each acknowledged commit is
// logged with the time the acknowledgement arrived; each error with its time and message. On
// SIGTERM/SIGINT — or when stdin is a pipe or terminal and closes — it stops, writes OUTPUT-FILE
// and prints the summary line as JSON. The table: probe(id bigserial primary key, n bigint,
// at timestamptz default now()). CONNECTION-STRING is Npgsql's Key=Value form.
if (args.Length != 3 || !int.TryParse(args[1], out var intervalMs) || intervalMs < 1)
{
    await Console.Error.WriteLineAsync("usage: Teal.Bench.Probe CONNECTION-STRING INTERVAL-MS OUTPUT-FILE");
    return 2;
}

var builder = new NpgsqlConnectionStringBuilder(args[0])
{
    // Every reconnect must be a real new connection through the endpoint, not a pooled one.
    Pooling = false,
};
using var stop = new CancellationTokenSource();
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
{
    context.Cancel = true;
    stop.Cancel();
});
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, context =>
{
    context.Cancel = true;
    stop.Cancel();
});
if (StdinCanSignalStop())
{
    _ = Task.Run(async () =>
    {
        // Reading to the end is how a parent that holds our stdin says "stop".
        await Console.In.ReadToEndAsync();
        await stop.CancelAsync();
    });
}

var probe = new ProbeWriter(builder.ConnectionString, TimeSpan.FromMilliseconds(intervalMs), TimeProvider.System);
var report = await probe.RunAsync(stop.Token);
await File.WriteAllTextAsync(args[2], JsonSerializer.Serialize(report, ProbeJson.Options));
Console.WriteLine(JsonSerializer.Serialize(report.Summary, ProbeJson.Options));
return 0;

// Started in the background from a script, stdin is /dev/null and is at its end at once: only
// a pipe or a terminal can mean "close to stop".
static bool StdinCanSignalStop()
{
    var target = new FileInfo("/proc/self/fd/0").LinkTarget ?? "";
    return target.StartsWith("pipe:", StringComparison.Ordinal) || target.StartsWith("/dev/pts/", StringComparison.Ordinal);
}
