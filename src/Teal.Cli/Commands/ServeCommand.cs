using System.CommandLine;
using System.Net.Sockets;
using Teal.Proxy.Hosting;
using Teal.Server;

namespace Teal.Cli.Commands;

/// <summary><c>teal serve</c>: runs the control plane until Ctrl-C or SIGTERM.</summary>
internal static class ServeCommand
{
    public static Command Create(CliSession session)
    {
        var listen = new Option<string>("--listen") { Description = $"HOST:PORT for the REST API (default {TealServerOptions.DefaultListen})", DefaultValueFactory = _ => TealServerOptions.DefaultListen };
        var endpoints = new Option<string>("--endpoints") { Description = "in-process (default): serve Teal's proxy endpoints here; external: leave them to `teal proxy` processes, so a restart of this server closes no client connection", DefaultValueFactory = _ => "in-process" };
        endpoints.AcceptOnlyFromAmong("in-process", "external");
        var command = new Command("serve", "Run the control plane: state, monitors and the REST API") { listen, endpoints };
        command.SetAction(async (parse, ct) =>
        {
            ProxyRuntime.ConfigureProcess();
            var options = new TealServerOptions(session.DataDirectoryFor(parse)) { Listen = parse.GetValue(listen)!, ExternalEndpoints = parse.GetValue(endpoints) == "external" }; // Both have a default value.
            EnsureFree(options.Listen);
            await using var app = TealServer.Build(options);
            try
            {
                await app.StartAsync(ct);
            }
            catch (IOException ex)
            {
                // Taken between the check below and Kestrel's bind (Kestrel has logged it already).
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

    /// <summary>
    /// Tries the address before the host starts: Kestrel logs a failed bind with its whole stack
    /// before the exception reaches the CLI, and "the port is taken" is an operator's everyday
    /// mistake that deserves one line. The probe binds as Kestrel does (.NET sets SO_REUSEADDR on
    /// TCP sockets), so it refuses exactly what Kestrel would.
    /// </summary>
    private static void EnsureFree(string listen)
    {
        var endpoint = TealServerOptions.ParseAddress(listen, "server");
        if (endpoint.Port == 0)
        {
            return;
        }

        try
        {
            using var probe = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            probe.Bind(endpoint);
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            throw new CliException($"cannot listen on {listen}: the address is already in use", $"another teal serve or another program listens there (see `ss -ltnp 'sport = :{endpoint.Port}'`); stop it, or choose another address with --listen");
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.AddressNotAvailable or SocketError.AccessDenied)
        {
            throw new CliException($"cannot listen on {listen}: {ex.Message}", "choose an address of this machine (and a port above 1023 unless teal runs as root) with --listen");
        }
    }
}
