using System.Diagnostics;

namespace Teal.Testing.Processes;

/// <summary>
/// A <c>dotnet</c> process whose stdout and stderr are kept (for waiting on a line and for
/// assertion messages): the plumbing <see cref="TealProcess"/> and <see cref="TealProxyProcess"/>
/// share. Each start replaces the process; the log runs on across restarts.
/// </summary>
internal sealed class LoggedProcess : IDisposable
{
    private readonly System.Text.StringBuilder _log = new();
    private Process? _process;

    public string Log
    {
        get
        {
            lock (_log)
            {
                return _log.ToString();
            }
        }
    }

    public bool Running => _process is { HasExited: false };

    /// <summary>The exit code once the process has exited by itself or was killed; null while it runs or before a start.</summary>
    public int? ExitCode => _process is { HasExited: true } p ? p.ExitCode : null;

    public int? Pid => _process?.Id;

    /// <summary>
    /// Starts <c>dotnet ARGUMENTS</c> with <paramref name="environment"/> added, in a session of its
    /// own (<c>setsid</c>, which execs in place: the process keeps its pid), as a service runs and
    /// as PgBouncer puts itself when it daemonizes. With autogroup scheduling (on in Debian's
    /// kernels) Linux shares the CPU between sessions first, so a Teal left in the session of the
    /// test or bench that drives the load would share one share with pgbench and be preempted by
    /// it: on 2 cores that alone cost Teal's proxy 14 % more CPU per TPC-B transaction (215 against 189 µs).
    /// </summary>
    public void Start(IEnumerable<string> arguments, IEnumerable<KeyValuePair<string, string>> environment, string what)
    {
        var info = new ProcessStartInfo("setsid") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add("dotnet");
        foreach (var argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        foreach (var (key, value) in environment)
        {
            info.Environment[key] = value;
        }

        var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {what}");
        process.OutputDataReceived += (_, e) => Append(e.Data);
        process.ErrorDataReceived += (_, e) => Append(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process = process;
    }

    /// <summary><c>kill -9</c>: no shutdown hook runs, exactly like a crash.</summary>
    public async Task KillAsync()
    {
        if (_process is { HasExited: false } p)
        {
            p.Kill(entireProcessTree: false);
            await p.WaitForExitAsync();
        }
    }

    /// <summary>SIGTERM: the process shuts down as it does when an operator stops it.</summary>
    public void Terminate()
    {
        if (_process is { HasExited: false } p)
        {
            Process.Start("kill", ["-TERM", p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])!.WaitForExit();
        }
    }

    /// <summary>Waits for the process to exit on its own; false when it still runs after <paramref name="timeout"/>.</summary>
    public async Task<bool> WaitForExitAsync(TimeSpan timeout)
    {
        if (_process is null)
        {
            return true;
        }

        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }

    public void Dispose() => _process?.Dispose();

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_log)
        {
            _log.AppendLine(line);
        }
    }
}
