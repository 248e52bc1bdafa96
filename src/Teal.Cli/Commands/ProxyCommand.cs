using System.CommandLine;
using System.Runtime.InteropServices;
using Teal.Proxy.Hosting;
using Teal.Server;
using Teal.Server.ProxyHost;

namespace Teal.Cli.Commands;

/// <summary>
/// <c>teal proxy</c>: Teal's proxy endpoints in their own process, following a <c>teal serve</c>.
/// SIGTERM (or Ctrl-C) stops accepting and lets established sessions end (a replacement listens
/// beside it on the same addresses); a second one stops at once.
/// </summary>
internal static class ProxyCommand
{
    public static Command Create(CliSession session)
    {
        var tokenFile = new Option<string?>("--token-file") { Description = "file holding the control plane's token (default: --token, $TEAL_TOKEN, or DATA_DIR/token)" };
        var adminListen = new Option<string>("--admin-listen") { Description = "HOST:PORT of this proxy's admin API, which the control plane drives (default 127.0.0.1:0, a free port)", DefaultValueFactory = _ => "127.0.0.1:0" };
        var name = new Option<string>("--name") { Description = "this proxy's name among the control plane's proxies (default: the host name)", DefaultValueFactory = _ => Environment.MachineName };
        var stateFile = new Option<string?>("--state-file") { Description = "where the last routes are kept, to serve without the control plane (default: DATA_DIR-proxy/NAME.routes.json)" };
        var drainTimeout = new Option<int>("--drain-timeout") { Description = "seconds established sessions may run on after SIGTERM (default 600)", DefaultValueFactory = _ => 600 };
        var listen = new Option<string[]>("--listen") { Description = "NAME=HOST:PORT: listen for endpoint NAME here instead of its declared address (repeatable)", AllowMultipleArgumentsPerToken = false };
        var command = new Command("proxy", "Serve Teal's proxy endpoints in their own process, following the control plane (--server URL; repeat it, or give a comma list, for a leader and its standbys on a shared state store: the proxy follows whichever leads, and keeps its last routes while none answers)")
        {
            tokenFile, adminListen, name, stateFile, drainTimeout, listen,
        };
        command.SetAction(async (parse, ct) =>
        {
            ProxyRuntime.ConfigureProcess();
            var options = Options(session, parse, tokenFile, adminListen, name, stateFile, drainTimeout, listen);
            var drain = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using var hardStop = new CancellationTokenSource();
            void OnSignal(PosixSignalContext context)
            {
                context.Cancel = true;
                if (!drain.TrySetResult())
                {
                    hardStop.Cancel();
                }
            }

            using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
            using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
            await using var process = await ProxyProcess.StartAsync(options, ct);
            await session.Output.WriteLineAsync($"teal proxy {options.Name} {TealServer.Version}: admin API {process.AdminUrl}, control plane {string.Join(", ", options.Servers)}, routes in {options.StateFile}");
            await session.Output.FlushAsync(ct);
            using (ct.Register(() => drain.TrySetResult()))
            {
                await drain.Task;
            }

            await process.DrainAsync(hardStop.Token);
            return ExitCodes.Ok;
        });
        return command;
    }

    private static ProxyProcessOptions Options(CliSession session, ParseResult parse, Option<string?> tokenFile, Option<string> adminListen, Option<string> name, Option<string?> stateFile, Option<int> drainTimeout, Option<string[]> listen)
    {
        var servers = Servers(session, parse);
        var dataDirectory = parse.GetValue(session.DataDirectory);
        var proxyName = parse.GetValue(name)!; // Has a default value.
        var token = ReadToken(parse.GetValue(tokenFile))
            ?? parse.GetValue(session.Token)
            ?? session.Environment("TEAL_TOKEN")
            ?? ReadToken(Path.Combine(dataDirectory ?? session.DataDirectoryFor(parse), "token"), mustExist: false)
            ?? throw new CliException("teal proxy needs the control plane's token", "give --token-file FILE (the server's DATA_DIR/token), or --data-dir DIR on the server's machine");
        var state = parse.GetValue(stateFile)
            ?? Path.Combine(TealServerOptions.DefaultDataDirectory(session.Environment).TrimEnd('/') + "-proxy", $"{proxyName}.routes.json");
        var overrides = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var pair in parse.GetValue(listen) ?? [])
        {
            var parts = pair.Split('=', 2);
            if (parts.Length != 2 || parts[0].Length == 0)
            {
                throw new CliException($"--listen '{pair}' is not NAME=HOST:PORT", "for example --listen app=127.0.0.1:6433", ExitCodes.Usage);
            }

            overrides[parts[0]] = parts[1];
        }

        var seconds = parse.GetValue(drainTimeout);
        if (seconds < 0)
        {
            throw new CliException("--drain-timeout cannot be negative", "give the seconds sessions may run on after SIGTERM", ExitCodes.Usage);
        }

        return new ProxyProcessOptions(servers, token, proxyName, parse.GetValue(adminListen)!, Path.GetFullPath(state))
        {
            // With --data-dir the proxy shows clients the control plane's certificate (same fingerprint); otherwise its own.
            CertificateDirectory = dataDirectory ?? Path.GetDirectoryName(Path.GetFullPath(state))!,
            DrainTimeout = TimeSpan.FromSeconds(seconds),
            ListenOverrides = overrides,
        };
    }

    /// <summary>
    /// The control planes: <c>--server</c> repeated or as a comma list (the leader and its standbys
    /// on a shared state store), else <c>$TEAL_SERVER</c> (a comma list too), else the default.
    /// </summary>
    private static List<Uri> Servers(CliSession session, ParseResult parse)
    {
        // Repeated --server options come comma-joined (see CliSession.Server).
        var given = parse.GetValue(session.Server) ?? session.Environment("TEAL_SERVER") ?? TealServerOptions.DefaultServerUrl;
        var servers = new List<Uri>();
        foreach (var text in given.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!Uri.TryCreate(text, UriKind.Absolute, out var server) || (server.Scheme != Uri.UriSchemeHttp && server.Scheme != Uri.UriSchemeHttps))
            {
                throw new CliException($"'{text}' is not a server URL", "use --server http://HOST:PORT (repeat it, or separate with commas, for the leader and its standbys)", ExitCodes.Usage);
            }

            if (!servers.Contains(server))
            {
                servers.Add(server);
            }
        }

        return servers.Count > 0 ? servers : throw new CliException("--server names no server", "use --server http://HOST:PORT", ExitCodes.Usage);
    }

    private static string? ReadToken(string? file, bool mustExist = true)
    {
        if (file is null || (!mustExist && !File.Exists(file)))
        {
            return null;
        }

        try
        {
            var token = File.ReadAllText(file).Trim();
            return token.Length > 0 ? token : throw new CliException($"{file} is empty", "give the control plane's DATA_DIR/token");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new CliException($"cannot read the token in {file}: {ex.Message}", "give a readable copy of the control plane's DATA_DIR/token (keep it 0600)");
        }
    }
}
