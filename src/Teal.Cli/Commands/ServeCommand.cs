using System.CommandLine;
using System.Net.Sockets;
using Teal.Proxy.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Teal.Server;
using Teal.Server.Hosting;

namespace Teal.Cli.Commands;

/// <summary><c>teal serve</c>: runs the control plane until Ctrl-C or SIGTERM.</summary>
internal static class ServeCommand
{
    public static Command Create(CliSession session)
    {
        var listen = new Option<string>("--listen") { Description = $"HOST:PORT for the REST API (default {TealServerOptions.DefaultListen})", DefaultValueFactory = _ => TealServerOptions.DefaultListen };
        var endpoints = new Option<string>("--endpoints") { Description = "in-process (default): serve Teal's proxy endpoints here; external: leave them to `teal proxy` processes, so a restart of this server closes no client connection", DefaultValueFactory = _ => "in-process" };
        endpoints.AcceptOnlyFromAmong("in-process", "external");
        var state = new Option<string?>("--state")
        {
            Description = "Where the state is: a PostgreSQL database shared by several control-plane machines (postgresql://user@host/db; password in TEAL_STATE_PASSWORD or ~/.pgpass). Default: SQLite in the data directory (or TEAL_STATE)",
        };
        var keyFile = new Option<string?>("--state-key-file") { Description = "With --state: the key that seals passwords in the state database, the same file on every control-plane machine (default DATA_DIR/state.key, or TEAL_STATE_KEY_FILE)" };
        var advertise = new Option<string?>("--advertise-url") { Description = "With --state: the URL this server is reached at, shown by standbys to name the leader (default: the --listen address)" };
        var command = new Command("serve", "Run the control plane: state, monitors and the REST API") { listen, endpoints, state, keyFile, advertise };
        command.SetAction(async (parse, ct) =>
        {
            var stateUrl = NullIfEmpty(parse.GetValue(state) ?? session.Environment("TEAL_STATE"));
            var external = parse.GetValue(endpoints) == "external";
            // Inline socket completions make the in-process proxy fast but forbid any blocking
            // socket call in this process; the PostgreSQL state store's secret reads are
            // synchronous (ISecretStore), so with it the completions go back to the thread pool.
            ProxyRuntime.ConfigureProcess(inlineSocketCompletions: stateUrl is null);
            var options = new TealServerOptions(session.DataDirectoryFor(parse))
            {
                Listen = parse.GetValue(listen)!, // Has a default value.
                ExternalEndpoints = external,
                State = stateUrl,
                StatePassword = NullIfEmpty(session.Environment("TEAL_STATE_PASSWORD")),
                StateKeyFile = NullIfEmpty(parse.GetValue(keyFile) ?? session.Environment("TEAL_STATE_KEY_FILE")),
                AdvertiseUrl = NullIfEmpty(parse.GetValue(advertise)),
            };
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
            if (app.Services.GetRequiredService<Leadership>().LostReason is { } lost)
            {
                throw new CliException($"this teal serve lost the leadership of the control plane and stopped: {lost}", "start it again (a service manager does): it runs as a standby and takes over when no other server leads");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static string? NullIfEmpty(string? value) => string.IsNullOrWhiteSpace(value) ? null : value;

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
