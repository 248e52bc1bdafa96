using System.CommandLine;
using System.Globalization;
using Teal.Cli.Demo;

namespace Teal.Cli.Commands;

/// <summary><c>teal demo [--stop]</c>: Teal's main job end to end on this machine, then a summary.</summary>
internal static class DemoCommand
{
    public static Command Create(CliSession session)
    {
        var stop = new Option<bool>("--stop") { Description = "Stop the demo's teal serve and its PostgreSQL servers (data stays in the directory)" };
        var port = new Option<int?>("--port") { Description = "The demo server's API and dashboard port (default: $TEAL_DEMO_PORT or 7400)" };
        var endpointPort = new Option<int?>("--endpoint-port") { Description = "The endpoint applications use (default: $TEAL_DEMO_ENDPOINT_PORT or 6432)" };
        var command = new Command(
            "demo",
            "Run the demo: a managed PostgreSQL 15 blue with sample data under a live write load, a deployment to PostgreSQL 17, verify and switchover, then a summary. Data in --data-dir (default: $TEAL_DEMO_DIR or /tmp/teal-demo).")
        {
            stop, port, endpointPort,
        };
        command.SetAction(async (parse, ct) =>
        {
            var options = new DemoOptions(
                Path.GetFullPath(parse.GetValue(session.DataDirectory) ?? session.Environment("TEAL_DEMO_DIR") ?? DemoOptions.DefaultDirectory),
                parse.GetValue(port) ?? Number(session.Environment("TEAL_DEMO_PORT")) ?? 7400,
                parse.GetValue(endpointPort) ?? Number(session.Environment("TEAL_DEMO_ENDPOINT_PORT")) ?? 6432);
            if (parse.GetValue(stop))
            {
                var stopped = await DemoServer.StopAsync(options);
                await session.Output.WriteLineAsync($"demo: stopped {stopped} process(es); data left in {options.Directory} (remove it with rm -rf {options.Directory})");
                return ExitCodes.Ok;
            }

            return await new DemoRun(session, options).RunAsync(ct);
        });
        return command;
    }

    private static int? Number(string? text) => int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) ? value : null;
}
