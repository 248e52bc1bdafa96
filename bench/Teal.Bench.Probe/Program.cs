using System.Data.Common;
using System.Runtime.InteropServices;
using System.Text.Json;
using MySqlConnector;
using Npgsql;
using Teal.Bench.Probe;

// teal-bench-probe [--mysql] [--load CLIENTS] CONNECTION-STRING INTERVAL-MS OUTPUT-FILE
//
// Commits `INSERT INTO probe (n) VALUES (n)` with n = 1, 2, 3, … every INTERVAL-MS through the
// endpoint under test, one connection, reconnecting after any error. Each acknowledged commit is
// logged with the time the acknowledgement arrived; each error with its time and message. On
// SIGTERM/SIGINT — or when stdin is a pipe or terminal and closes — it stops, writes OUTPUT-FILE
// and prints the summary line as JSON. The table: probe(id bigserial primary key, n bigint,
// at timestamptz default now()). CONNECTION-STRING is Npgsql's Key=Value form, or
// MySqlConnector's with --mysql (MariaDB: probe(n BIGINT PRIMARY KEY, ...)).
// --load CLIENTS (MySQL family): that many more connections run small transactions next to the
// probe (LoadWriters: the application load of the MariaDB runs); its figures go under "load".
var mysql = false;
var loadClients = 0;
var positional = new List<string>();
for (var i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--mysql":
            mysql = true;
            break;
        case "--load" when i + 1 < args.Length && int.TryParse(args[i + 1], out var clients) && clients >= 0:
            loadClients = clients;
            i++;
            break;
        default:
            positional.Add(args[i]);
            break;
    }
}

if (positional.Count != 3 || !int.TryParse(positional[1], out var intervalMs) || intervalMs < 1 || (loadClients > 0 && !mysql))
{
    await Console.Error.WriteLineAsync("usage: Teal.Bench.Probe [--mysql] [--load CLIENTS] CONNECTION-STRING INTERVAL-MS OUTPUT-FILE (--load needs --mysql)");
    return 2;
}

// Every reconnect must be a real new connection through the endpoint, not a pooled one.
Func<DbConnection> connect = mysql
    ? Connect(new MySqlConnectionStringBuilder(positional[0]) { Pooling = false }.ConnectionString, s => new MySqlConnection(s))
    : Connect(new NpgsqlConnectionStringBuilder(positional[0]) { Pooling = false }.ConnectionString, s => new NpgsqlConnection(s));
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

var probe = new ProbeWriter(connect, TimeSpan.FromMilliseconds(intervalMs), TimeProvider.System);
var load = loadClients > 0 ? new LoadWriters(connect, loadClients).RunAsync(stop.Token) : null;
var report = await probe.RunAsync(stop.Token);
if (load is not null)
{
    report = report with { Load = await load };
}

await File.WriteAllTextAsync(positional[2], JsonSerializer.Serialize(report, ProbeJson.Options));
Console.WriteLine(JsonSerializer.Serialize(report.Summary, ProbeJson.Options));
return 0;

// Started in the background from a script, stdin is /dev/null and is at its end at once: only
// a pipe or a terminal can mean "close to stop".
static bool StdinCanSignalStop()
{
    var target = new FileInfo("/proc/self/fd/0").LinkTarget ?? "";
    return target.StartsWith("pipe:", StringComparison.Ordinal) || target.StartsWith("/dev/pts/", StringComparison.Ordinal);
}

static Func<DbConnection> Connect(string connectionString, Func<string, DbConnection> create) => () => create(connectionString);
