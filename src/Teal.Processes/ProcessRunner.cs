using System.Diagnostics;
using System.Text;
using Teal.Core.Errors;

namespace Teal.Processes;

/// <summary>The result of a finished child process.</summary>
public sealed record ProcessResult(int ExitCode, string StandardOutput, string StandardError)
{
    public bool Succeeded => ExitCode == 0;

    /// <summary>The last non-empty lines of stderr (or stdout), for error messages.</summary>
    public string Tail(int lines = 5)
    {
        var text = string.IsNullOrWhiteSpace(StandardError) ? StandardOutput : StandardError;
        return string.Join(" | ", text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).TakeLast(lines));
    }
}

/// <summary>What to run: program, arguments, and optionally the OS user, environment and stdin.</summary>
public sealed record ProcessSpec(string FileName, IReadOnlyList<string> Arguments)
{
    /// <summary>Run as this OS user (through <c>runuser</c>; only when Teal runs as root).</summary>
    public string? RunAs { get; init; }

    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();

    public string? WorkingDirectory { get; init; }

    public string? StandardInput { get; init; }

    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(5);
}

/// <summary>Runs external tools (initdb, pg_ctl, pg_dump, psql) and captures their output.</summary>
public static class ProcessRunner
{
    /// <summary>Whether Teal runs as root (Environment.UserName reads the effective uid's name).</summary>
    public static bool IsRoot { get; } = Environment.UserName == "root";

    public static async Task<ProcessResult> RunAsync(ProcessSpec spec, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        using var process = new Process { StartInfo = StartInfo(spec) };
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (stdout) { stdout.AppendLine(e.Data); } } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (stderr) { stderr.AppendLine(e.Data); } } };
        try
        {
            process.Start();
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new TealException("process.not-found", $"could not run {spec.FileName}: {ex.Message}", "run scripts/setup.sh to install Teal's dependencies", ex);
        }

        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (spec.StandardInput is not null)
        {
            await process.StandardInput.WriteAsync(spec.StandardInput.AsMemory(), cancellationToken);
            process.StandardInput.Close();
        }

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(spec.Timeout);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            if (cancellationToken.IsCancellationRequested)
            {
                throw;
            }

            throw new TealException("process.timeout", $"{Path.GetFileName(spec.FileName)} did not finish within {spec.Timeout.TotalSeconds:0} s", null);
        }

        // WaitForExitAsync returns once the process exited and its streams were drained.
        string output, error;
        lock (stdout) { output = stdout.ToString(); }
        lock (stderr) { error = stderr.ToString(); }
        return new ProcessResult(process.ExitCode, output, error);
    }

    /// <summary>
    /// The command line and environment of a run. Environment values (passwords among them) go
    /// only into the child's environment, never into its arguments: any local user reads every
    /// process's argv in /proc/PID/cmdline (ps shows it), while /proc/PID/environ is readable by
    /// the process's owner and root only.
    /// </summary>
    public static ProcessStartInfo StartInfo(ProcessSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        return BuildStartInfo(spec);
    }

    private static ProcessStartInfo BuildStartInfo(ProcessSpec spec)
    {
        var (fileName, arguments) = spec.RunAs is { } user && IsRoot
            // runuser without --login passes the environment on (it resets only HOME, SHELL,
            // USER and LOGNAME) and switches uid/gid and supplementary groups.
            ? ("/usr/sbin/runuser", (IEnumerable<string>)["-u", user, "--", spec.FileName, .. spec.Arguments])
            : (spec.FileName, spec.Arguments);

        var psi = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = spec.StandardInput is not null,
            UseShellExecute = false,
            WorkingDirectory = spec.WorkingDirectory ?? "/",
        };
        foreach (var a in arguments)
        {
            psi.ArgumentList.Add(a);
        }

        foreach (var (k, v) in spec.Environment)
        {
            psi.Environment[k] = v;
        }

        return psi;
    }
}
