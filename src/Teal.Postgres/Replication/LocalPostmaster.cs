using System.Runtime.InteropServices;

namespace Teal.Postgres.Replication;

/// <summary>
/// A server's postmaster as this machine's /proc shows it, for the drain of a side fenced by its
/// own pg_hba.conf (ARCHITECTURE.md, "The fence"). A backend checks pg_hba.conf against the rules
/// the postmaster had when it forked that backend, and it does so only once its client has sent
/// the startup packet, which PostgreSQL waits for up to <c>authentication_timeout</c> (60 s by
/// default). So a client that connected before the fence's reload and stays silent is checked
/// against the server's own rules whenever it speaks, after the drain if it likes. Until then
/// its backend has no PGPROC: neither pg_stat_activity nor pg_locks shows it, and
/// pg_terminate_backend cannot reach it. Every server fenced by its file is one Teal
/// provisioned, on this machine, so the drain finds such backends among the postmaster's
/// children — their process title is still the postmaster's command line, since a backend sets
/// its own once it has read the startup packet — and ends them with SIGTERM, on which a backend
/// waiting for its startup packet exits at once.
/// </summary>
public sealed class LocalPostmaster
{
    private const int SigTerm = 15;

    private readonly byte[] _commandLine;

    private LocalPostmaster(int pid, byte[] commandLine)
    {
        Pid = pid;
        _commandLine = commandLine;
    }

    public int Pid { get; }

    /// <summary>
    /// The postmaster whose postmaster.pid the server itself read as <paramref name="pidFile"/>,
    /// when it runs on this machine: the same file, with the same pid, data directory and start
    /// time, is there locally, and that pid is running. Null for a server elsewhere.
    /// </summary>
    public static LocalPostmaster? Find(string? pidFile)
    {
        var lines = pidFile?.Split('\n');
        if (lines is not { Length: > 2 } || !int.TryParse(lines[0], out var pid) || lines[1].Length == 0)
        {
            return null;
        }

        try
        {
            var local = File.ReadAllText(Path.Combine(lines[1], "postmaster.pid")).Split('\n');
            if (local.Length <= 2 || local[0] != lines[0] || local[1] != lines[1] || local[2] != lines[2])
            {
                return null;
            }

            return new LocalPostmaster(pid, File.ReadAllBytes($"/proc/{pid}/cmdline"));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Children that have not read their startup packet yet (title still the postmaster's).</summary>
    public IReadOnlyList<int> ChildrenBeforeStartup() =>
        Children().Where(c => CommandLine(c) is { } line && line.AsSpan().SequenceEqual(_commandLine)).ToList();

    /// <summary>SIGTERM to each of <paramref name="pids"/> still a child of this postmaster.</summary>
    public void Terminate(IEnumerable<int> pids)
    {
        foreach (var pid in pids.Where(IsRunningChild))
        {
            _ = Kill(pid, SigTerm);
        }
    }

    /// <summary>Whether <paramref name="pid"/> is a child of this postmaster that has not exited.</summary>
    public bool IsRunningChild(int pid)
    {
        var stat = Stat(pid);
        return stat is { } s && s.ParentPid == Pid && s.State is not ('Z' or 'X');
    }

    private List<int> Children()
    {
        // One line of child pids where the kernel keeps it (CONFIG_PROC_CHILDREN), else a scan.
        try
        {
            return File.ReadAllText($"/proc/{Pid}/task/{Pid}/children")
                .Split(' ', StringSplitOptions.RemoveEmptyEntries)
                .Select(p => int.Parse(p, System.Globalization.CultureInfo.InvariantCulture))
                .ToList();
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return Directory.EnumerateDirectories("/proc")
                .Select(Path.GetFileName)
                .Select(name => int.TryParse(name, out var pid) ? pid : 0)
                .Where(pid => pid > 0 && Stat(pid)?.ParentPid == Pid)
                .ToList();
        }
    }

    private static byte[]? CommandLine(int pid)
    {
        try
        {
            return File.ReadAllBytes($"/proc/{pid}/cmdline");
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static (char State, int ParentPid)? Stat(int pid)
    {
        try
        {
            // "pid (comm) S ppid …": comm may hold spaces and parentheses, so read after the last ')'.
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return (fields[0][0], int.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture));
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return null;
        }
    }

    // DllImport rather than LibraryImport: the source-generated form needs unsafe code enabled
    // for this project (as in PgBouncer/AtomicFile).
    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int Kill(int pid, int signal);
}
