using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Teal.Testing.Processes;

/// <summary>
/// A real <c>teal proxy</c> process following a <see cref="TealProcess"/>, as operators run it
/// (token from the server's data directory, its route file in its own directory). Killed when
/// disposed. <see cref="KillAsync"/> is <c>kill -9</c>, <see cref="TerminateAsync"/> SIGTERM.
/// </summary>
public sealed partial class TealProxyProcess : IAsyncDisposable
{
    private readonly LoggedProcess _process = new();
    private readonly IReadOnlyList<string> _arguments;
    private readonly IReadOnlyList<KeyValuePair<string, string>> _environment;

    private TealProxyProcess(string name, IReadOnlyList<string> arguments, IReadOnlyList<KeyValuePair<string, string>> environment)
    {
        Name = name;
        _arguments = arguments;
        _environment = environment;
    }

    public string Name { get; }

    /// <summary>Where its admin API answered at the last start.</summary>
    public Uri? AdminUrl { get; private set; }

    public bool Running => _process.Running;

    public int? ExitCode => _process.ExitCode;

    public string Log => _process.Log;

    /// <summary>
    /// Starts <c>teal proxy --name NAME</c> against <paramref name="server"/>;
    /// <paramref name="listen"/> gives endpoints another address on this proxy (<c>app=127.0.0.1:P</c>).
    /// </summary>
    public static Task<TealProxyProcess> StartAsync(TealProcess server, string name, IReadOnlyList<string>? listen = null, string? stateDirectory = null, IReadOnlyDictionary<string, string>? environment = null) =>
        StartAsync([server], name, listen, stateDirectory, environment);

    /// <summary>
    /// Starts <c>teal proxy</c> with one <c>--server</c> per control plane (a leader and its
    /// standbys on one shared state store, which share the token).
    /// </summary>
    /// <param name="environment">Added to the proxy's (<see cref="TealProcess.WarmUpOff"/> by default).</param>
    public static async Task<TealProxyProcess> StartAsync(IReadOnlyList<TealProcess> servers, string name, IReadOnlyList<string>? listen = null, string? stateDirectory = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        ArgumentNullException.ThrowIfNull(servers);
        var directory = stateDirectory ?? TestDirectories.NewDirectory("proxy");
        var arguments = new List<string> { RepoPaths.TealDll, "proxy" };
        foreach (var server in servers)
        {
            arguments.Add("--server");
            arguments.Add(server.Url);
        }

        arguments.AddRange(["--token-file", Path.Combine(servers[0].DataDirectory, "token"), "--name", name, "--state-file", Path.Combine(directory, $"{name}.routes.json"), "--drain-timeout", "120"]);
        foreach (var pair in listen ?? [])
        {
            arguments.Add("--listen");
            arguments.Add(pair);
        }

        var proxy = new TealProxyProcess(name, arguments, [.. TealProcess.WarmUpOff, .. environment ?? new Dictionary<string, string>()]);
        await proxy.StartAgainAsync();
        return proxy;
    }

    /// <summary>Starts the same proxy again (same name, same route file).</summary>
    public async Task StartAgainAsync()
    {
        _process.Start(_arguments, _environment, "teal proxy");
        await WaitForLogAsync(AdminApi(), TimeSpan.FromSeconds(60));
        AdminUrl = new Uri(AdminApi().Matches(Log)[^1].Groups[1].Value);
    }

    /// <summary>Waits until the proxy's output matches <paramref name="pattern"/>.</summary>
    public async Task WaitForLogAsync(Regex pattern, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        var deadline = Stopwatch.StartNew();
        while (!pattern.IsMatch(Log))
        {
            if (_process.ExitCode is { } exitCode)
            {
                throw new InvalidOperationException($"teal proxy {Name} exited with {exitCode}:\n{Log}");
            }

            if (deadline.Elapsed > timeout)
            {
                throw new TimeoutException($"teal proxy {Name} did not log /{pattern}/ within {timeout}:\n{Log}");
            }

            await Task.Delay(50);
        }
    }

    /// <summary><c>kill -9</c>: no shutdown hook runs, exactly like a crash.</summary>
    public Task KillAsync() => _process.KillAsync();

    /// <summary>SIGTERM: the proxy stops accepting and lets its sessions end.</summary>
    public void Terminate() => _process.Terminate();

    public Task<bool> WaitForExitAsync(TimeSpan timeout) => _process.WaitForExitAsync(timeout);

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _process.Dispose();
    }

    [GeneratedRegex(@"admin API (http://\S+?)/?,")]
    private static partial Regex AdminApi();
}
