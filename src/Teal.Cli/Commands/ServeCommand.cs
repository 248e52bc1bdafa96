using System.CommandLine;
using Teal.Proxy.Hosting;
using Teal.Server;

namespace Teal.Cli.Commands;

/// <summary><c>teal serve</c>: runs the control plane until Ctrl-C or SIGTERM.</summary>
internal static class ServeCommand
{
    public static Command Create(CliSession session)
    {
        var listen = new Option<string>("--listen") { Description = $"HOST:PORT for the REST API (default {TealServerOptions.DefaultListen})", DefaultValueFactory = _ => TealServerOptions.DefaultListen };
        var command = new Command("serve", "Run the control plane: state, monitors and the REST API") { listen };
        command.SetAction(async (parse, ct) =>
        {
            ProxyRuntime.ConfigureProcess();
            var options = new TealServerOptions(session.DataDirectoryFor(parse)) { Listen = parse.GetValue(listen)! }; // Has a default value.
            await using var app = TealServer.Build(options);
            try
            {
                await app.StartAsync(ct);
            }
            catch (IOException ex)
            {
                throw new CliException($"cannot listen on {options.Listen}: {ex.Message}", "choose another address with --listen");
            }

            await session.Output.WriteLineAsync($"teal {TealServer.Version} serving {TealServer.BoundAddress(app)} (data in {Path.GetFullPath(options.DataDirectory)})");
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct, app.Lifetime.ApplicationStopping);
            try
            {
                await Task.Delay(Timeout.Infinite, stop.Token);
            }
            catch (OperationCanceledException)
            {
                // Ctrl-C or SIGTERM: stop below.
            }

            await app.StopAsync(CancellationToken.None);
            return ExitCodes.Ok;
        });
        return command;
    }
}
