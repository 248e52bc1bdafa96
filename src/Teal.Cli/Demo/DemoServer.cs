using System.Diagnostics;
using System.Globalization;

namespace Teal.Cli.Demo;

/// <summary>
/// The demo's <c>teal serve</c>: started detached (it keeps running after the demo, for the
/// dashboard), its pid kept in the demo directory so that <c>teal demo --stop</c> finds it.
/// </summary>
internal static class DemoServer
{
    public static async Task StartAsync(DemoOptions options, CancellationToken ct)
    {
        foreach (var (port, what, option) in new[] { (options.Port, "the demo's server", "--port"), (options.EndpointPort, "the demo's endpoint", "--endpoint-port") })
        {
            if (await InUseAsync(port, ct))
            {
                throw new CliException($"127.0.0.1:{port}, wanted for {what}, is in use", $"stop what listens there (a previous demo: `teal demo --stop`) or choose another port with {option}");
            }
        }

        Directory.CreateDirectory(options.Directory);
        // Managed servers run as the postgres OS user and live below this directory.
        File.SetUnixFileMode(options.Directory, (UnixFileMode)0b111_101_101);
        var (file, prefix) = SelfCommand();
        var command = string.Join(' ', new[] { file }.Concat(prefix).Concat(["serve", "--data-dir", options.Directory, "--listen", $"127.0.0.1:{options.Port}"]).Select(Quote));
        // setsid: its own session, so it outlives this process and the terminal's Ctrl-C.
        var shell = $"setsid {command} > {Quote(options.ServeLog)} 2>&1 < /dev/null & echo $!";
        var pid = (await RunAsync("/bin/sh", ["-c", shell], ct)).Trim();
        await File.WriteAllTextAsync(options.PidFile, pid, ct);

        using var http = new HttpClient { BaseAddress = options.Server, Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (DateTime.UtcNow < deadline && Directory.Exists($"/proc/{pid}"))
        {
            try
            {
                // Ready, not only alive: the demo's clients connect to its endpoint next.
                (await http.GetAsync(new Uri("/readyz", UriKind.Relative), ct)).EnsureSuccessStatusCode();
                return;
            }
            catch (HttpRequestException)
            {
                await Task.Delay(200, ct);
            }
            catch (TaskCanceledException) when (!ct.IsCancellationRequested)
            {
            }
        }

        throw new CliException($"teal serve did not start on {options.Server}", $"see {options.ServeLog}");
    }

    private static async Task<bool> InUseAsync(int port, CancellationToken ct)
    {
        using var client = new System.Net.Sockets.TcpClient();
        try
        {
            await client.ConnectAsync(System.Net.IPAddress.Loopback, port, ct);
            return true;
        }
        catch (System.Net.Sockets.SocketException)
        {
            return false;
        }
    }

    /// <summary>Stops the demo's server and the PostgreSQL servers it manages. Returns what was stopped.</summary>
    public static async Task<int> StopAsync(DemoOptions options)
    {
        var stopped = 0;
        if (File.Exists(options.PidFile) && int.TryParse(await File.ReadAllTextAsync(options.PidFile), NumberStyles.None, CultureInfo.InvariantCulture, out var pid) && IsServe(pid, options))
        {
            stopped += await SignalAndWaitAsync(pid, "TERM") ? 1 : 0;
        }

        var instances = Path.Combine(options.Directory, "instances");
        foreach (var pidFile in Directory.Exists(instances) ? Directory.GetFiles(instances, "postmaster.pid", SearchOption.AllDirectories) : [])
        {
            // The first line is the postmaster's pid; SIGINT is PostgreSQL's fast shutdown.
            if (int.TryParse(File.ReadLines(pidFile).FirstOrDefault(), NumberStyles.None, CultureInfo.InvariantCulture, out var postmaster) && IsPostmasterOf(postmaster, pidFile))
            {
                stopped += await SignalAndWaitAsync(postmaster, "INT") ? 1 : 0;
            }
        }

        return stopped;
    }

    /// <summary>How to run this very <c>teal</c> again: the apphost, or <c>dotnet teal.dll</c>.</summary>
    private static (string File, string[] Prefix) SelfCommand()
    {
        var process = Environment.ProcessPath ?? "dotnet";
        return Path.GetFileNameWithoutExtension(process) == "dotnet" ? (process, [typeof(DemoServer).Assembly.Location]) : (process, []);
    }

    /// <summary>Only a process whose command line is this demo's serve is stopped (a reused pid is left alone).</summary>
    private static bool IsServe(int pid, DemoOptions options) =>
        CommandLine(pid) is { } line && line.Contains("serve", StringComparison.Ordinal) && line.Contains(options.Directory, StringComparison.Ordinal);

    private static bool IsPostmasterOf(int pid, string pidFile) =>
        CommandLine(pid) is { } line && line.Contains("postgres", StringComparison.Ordinal) && line.Contains(Path.GetDirectoryName(pidFile)!, StringComparison.Ordinal);

    private static string? CommandLine(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static async Task<bool> SignalAndWaitAsync(int pid, string signal)
    {
        await RunAsync("kill", [$"-{signal}", pid.ToString(CultureInfo.InvariantCulture)], CancellationToken.None);
        for (var i = 0; i < 300 && Directory.Exists($"/proc/{pid}"); i++)
        {
            await Task.Delay(100);
        }

        return true;
    }

    private static async Task<string> RunAsync(string file, string[] args, CancellationToken ct)
    {
        var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        using var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {file}");
        var output = process.StandardOutput.ReadToEndAsync(ct);
        _ = process.StandardError.ReadToEndAsync(ct);
        await process.WaitForExitAsync(ct);
        return await output;
    }

    private static string Quote(string value) => "'" + value.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
}
