using System.Diagnostics;
using System.Net.Http.Json;
using Teal.Postgres.Instances;

namespace Teal.Testing.Processes;

/// <summary>
/// A real <c>teal serve</c> process on a free port with its own data directory, as operators run
/// it. Killed (and every server it started stopped) when disposed, also when the test failed.
/// <see cref="KillAsync"/> is <c>kill -9</c>; <see cref="StartAgainAsync"/> restarts on the same data.
/// </summary>
public sealed class TealProcess : IAsyncDisposable
{
    private readonly LoggedProcess _process = new();
    private readonly string _entry;

    private TealProcess(string dataDirectory, int port, string entry, IReadOnlyDictionary<string, string> environment, TealStateStore? state)
    {
        DataDirectory = dataDirectory;
        Port = port;
        _entry = entry;
        Environment = environment;
        State = state;
    }

    /// <summary>The shared PostgreSQL state store this serve uses (null: SQLite in its data directory).</summary>
    public TealStateStore? State { get; }

    public string DataDirectory { get; }

    /// <summary>Arguments added to <c>teal serve</c>'s at every start (<c>--endpoints external</c>).</summary>
    public IReadOnlyList<string> ServeArguments { get; set; } = [];

    /// <summary>Extra environment of the next start (fault-injection tests change it between restarts).</summary>
    public IReadOnlyDictionary<string, string> Environment { get; set; }

    public int Port { get; }

    /// <summary>The running <c>teal serve</c>'s process id (null before the first start).</summary>
    public int? Pid => _process.Pid;

    public string Url => $"http://127.0.0.1:{Port}";

    /// <summary>The API token <c>teal serve</c> wrote on first start.</summary>
    public string Token => File.ReadAllText(Path.Combine(DataDirectory, "token")).Trim();

    /// <summary>What the server wrote to stdout and stderr so far (for assertion messages).</summary>
    public string Log => _process.Log;

    /// <summary>
    /// Starts <c>teal serve</c>. <paramref name="entryAssembly"/> defaults to the built <c>teal.dll</c>;
    /// fault-injection tests pass a test host that adds a step decorator.
    /// </summary>
    /// <remarks>
    /// <paramref name="state"/>: a PostgreSQL state store shared with other serves; with
    /// <c>TEAL_TEST_STATE=postgresql</c> every serve gets a new one unless given one.
    /// </remarks>
    public static async Task<TealProcess> StartAsync(string? entryAssembly = null, IReadOnlyDictionary<string, string>? environment = null, IReadOnlyList<string>? serveArguments = null, TealStateStore? state = null, CancellationToken cancellationToken = default)
    {
        var dir = TestDirectories.NewDirectory("teal");
        state ??= TealStateStore.Requested ? await TealStateStore.NewPostgresAsync(cancellationToken) : null;
        var process = new TealProcess(dir, ManagedPostgres.FreePort(), entryAssembly ?? RepoPaths.TealDll, environment ?? new Dictionary<string, string>(), state) { ServeArguments = serveArguments ?? [] };
        TestDirectories.TrackTeal(process);
        await process.StartAgainAsync(cancellationToken);
        return process;
    }

    /// <summary>
    /// teal serve and teal proxy skip compiling their code at start (it only moves the JIT's work
    /// earlier, 2-3 s of a core each time, and the suite starts them some two hundred times on two
    /// cores); a test that checks the warm-up, or runs as operators do, sets it back with
    /// <c>TEAL_CODE_WARM_UP=on</c> in its environment (a later entry wins).
    /// </summary>
    public static readonly IReadOnlyDictionary<string, string> WarmUpOff = new Dictionary<string, string> { ["TEAL_CODE_WARM_UP"] = "off" };

    /// <summary>The environment that turns the warm-up back on.</summary>
    public static readonly IReadOnlyDictionary<string, string> WarmUpOn = new Dictionary<string, string> { ["TEAL_CODE_WARM_UP"] = "on" };

    public async Task StartAgainAsync(CancellationToken cancellationToken = default)
    {
        _process.Start(
            new[] { _entry, "serve", "--data-dir", DataDirectory, "--listen", $"127.0.0.1:{Port}" }.Concat(ServeArguments),
            WarmUpOff.Concat(State?.Environment ?? new Dictionary<string, string>()).Concat(Environment),
            "teal serve");

        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < TimeSpan.FromSeconds(60))
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (_process.ExitCode is { } exitCode)
            {
                throw new InvalidOperationException($"teal serve exited with {exitCode}:\n{Log}");
            }

            try
            {
                var health = await http.GetFromJsonAsync<Dictionary<string, System.Text.Json.JsonElement>>($"{Url}/healthz", cancellationToken);
                // Up once its endpoints listen (a test connects to them next); on a shared state
                // store, once it leads or follows a leader it can name.
                if (health is not null && IsReady(health) && (State is null || Leads(health) || health.TryGetValue("leader", out var leader) && leader.ValueKind == System.Text.Json.JsonValueKind.String))
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
            }
            catch (TaskCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
            }

            await Task.Delay(100, cancellationToken);
        }

        throw new TimeoutException($"teal serve was not ready (/healthz: ready) within 60 s:\n{Log}");
    }

    /// <summary>Whether this serve says it leads the control plane (<c>GET /healthz</c>).</summary>
    public async Task<bool> IsLeaderAsync()
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        try
        {
            var health = await http.GetFromJsonAsync<Dictionary<string, System.Text.Json.JsonElement>>($"{Url}/healthz");
            return health is not null && Leads(health);
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException)
        {
            return false;
        }
    }

    private static bool IsReady(Dictionary<string, System.Text.Json.JsonElement> health) =>
        health.TryGetValue("ready", out var ready) && ready.ValueKind == System.Text.Json.JsonValueKind.True;

    private static bool Leads(Dictionary<string, System.Text.Json.JsonElement> health) =>
        health.TryGetValue("role", out var role) && role.ValueKind == System.Text.Json.JsonValueKind.String && role.GetString() == "leader";

    /// <summary>
    /// Runs one more <c>teal serve</c> on <paramref name="dataDirectory"/> (listening on
    /// <paramref name="port"/>) until it exits by itself: a second control plane, expected to refuse.
    /// </summary>
    public static async Task<CliResult> ServeOnceAsync(string dataDirectory, int port, TimeSpan timeout)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { RepoPaths.TealDll, "serve", "--data-dir", dataDirectory, "--listen", $"127.0.0.1:{port}" })
        {
            info.ArgumentList.Add(arg);
        }

        using var process = Process.Start(info) ?? throw new InvalidOperationException("could not start teal serve");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"the second teal serve on {dataDirectory} did not exit within {timeout}: it should have refused\n{await stdout}\n{await stderr}");
        }

        return new CliResult(process.ExitCode, await stdout, await stderr);
    }

    /// <summary><c>kill -9</c>: no shutdown hook runs, exactly like a crash.</summary>
    public Task KillAsync() => _process.KillAsync();

    /// <summary>Waits for the process to exit on its own (a fault-injection host kills itself).</summary>
    public Task<bool> WaitForExitAsync(TimeSpan timeout) => _process.WaitForExitAsync(timeout);

    public bool Running => _process.Running;

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _process.Dispose();
        StopServersUnder(DataDirectory);
        TestDirectories.UntrackTeal(this);
    }

    /// <summary>Stops (SIGQUIT, immediate) every PostgreSQL server whose data lives under <paramref name="directory"/>.</summary>
    internal static void StopServersUnder(string directory)
    {
        if (!Directory.Exists(directory))
        {
            return;
        }

        // Managed MariaDB servers: only a mariadbd started with that directory's my.cnf is killed.
        foreach (var pidFile in Directory.EnumerateFiles(directory, "mariadbd.pid", SearchOption.AllDirectories))
        {
            var instance = Path.GetDirectoryName(pidFile)!;
            Teal.MySql.Instances.ManagedMariaDb.StopByPidAsync(pidFile, Path.Combine(instance, "my.cnf"), immediate: true).GetAwaiter().GetResult();
        }

        foreach (var pidFile in Directory.EnumerateFiles(directory, "postmaster.pid", SearchOption.AllDirectories))
        {
            try
            {
                var pid = int.Parse(File.ReadLines(pidFile).First(), System.Globalization.CultureInfo.InvariantCulture);
                // A server killed earlier leaves its pid file behind, and the pid may since belong
                // to another process: only a postmaster started on this data directory is killed.
                var dataDirectory = Path.GetDirectoryName(pidFile)!;
                var commandLine = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
                if (!commandLine.Contains(dataDirectory, StringComparison.Ordinal))
                {
                    continue;
                }

                using var server = Process.GetProcessById(pid);
                server.Kill(entireProcessTree: true);
            }
            catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or IOException or UnauthorizedAccessException or FormatException or System.ComponentModel.Win32Exception)
            {
                // Already gone.
            }
        }
    }
}
