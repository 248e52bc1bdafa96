using System.Collections.Concurrent;
using Teal.Core.Engines;
using Teal.Postgres.Engines;
using Teal.Postgres.Instances;
using Teal.MySql.Engines;
using Teal.MySql.Instances;

namespace Teal.Testing;

/// <summary>
/// Where test servers live, and the guarantee that none outlives its test process:
/// each test process owns <c>/tmp/teal-tests/p{pid}-{random}</c>; servers are stopped when their
/// fixture is disposed (also when a test failed), on process exit, and — for a process that
/// died without either — by the next test process that starts, which sweeps directories whose
/// owner is gone. <c>scripts/test.sh</c> sweeps once more at the end.
/// </summary>
public static class TestDirectories
{
    public const string BaseDirectory = "/tmp/teal-tests";

    private static readonly ConcurrentDictionary<string, ManagedPostgresServer> Running = new();
    private static readonly ConcurrentDictionary<string, ManagedMariaDbServer> RunningMariaDb = new();
    private static readonly Lazy<string> RootLazy = new(CreateRoot);

    // Helper daemons (PgBouncer) by pid file, with the program name the pid must still belong to.
    private static readonly ConcurrentDictionary<string, string> RunningDaemons = new();

    public static PostgresEngineCatalog Catalog { get; } = new(PostgresEngineOptions.FromEnvironment());

    public static ManagedPostgres Managed { get; } = new(Catalog);

    public static MariaDbEngineCatalog MariaDbCatalog { get; } = new(MariaDbEngineOptions.FromEnvironment());

    public static ManagedMariaDb ManagedMariaDb { get; } = new(MariaDbCatalog);

    /// <summary>This test process's directory (created on first use, after sweeping orphans).</summary>
    public static string Root => RootLazy.Value;

    /// <summary>A new, empty directory under <see cref="Root"/>, reachable by the server user.</summary>
    public static string NewDirectory(string prefix)
    {
        var dir = Path.Combine(Root, $"{prefix}-{Guid.NewGuid():N}"[..(prefix.Length + 9)]);
        Directory.CreateDirectory(dir);
        File.SetUnixFileMode(dir, (UnixFileMode)0b111_101_101);
        return dir;
    }

    private static readonly ConcurrentDictionary<Processes.TealProcess, bool> RunningTeal = new();

    internal static void TrackTeal(Processes.TealProcess process) => RunningTeal[process] = true;

    internal static void UntrackTeal(Processes.TealProcess process) => RunningTeal.TryRemove(process, out _);

    internal static void Track(ManagedPostgresServer server) => Running[server.Directory] = server;

    internal static void Untrack(ManagedPostgresServer server) => Running.TryRemove(server.Directory, out _);

    internal static void Track(ManagedMariaDbServer server) => RunningMariaDb[server.Directory] = server;

    internal static void Untrack(ManagedMariaDbServer server) => RunningMariaDb.TryRemove(server.Directory, out _);

    internal static void TrackDaemon(string pidFile, string program) => RunningDaemons[pidFile] = program;

    internal static void UntrackDaemon(string pidFile) => RunningDaemons.TryRemove(pidFile, out _);

    /// <summary>
    /// Kills the daemon whose pid is in <paramref name="pidFile"/>, if that pid still belongs to
    /// <paramref name="program"/> (pids are reused). Returns the pid killed, or null.
    /// </summary>
    internal static int? KillDaemon(string pidFile, string program)
    {
        try
        {
            if (!File.Exists(pidFile) || !int.TryParse(File.ReadAllText(pidFile).Trim(), out var pid)
                || !File.Exists($"/proc/{pid}/comm") || File.ReadAllText($"/proc/{pid}/comm").Trim() != program)
            {
                return null;
            }

            using var process = System.Diagnostics.Process.GetProcessById(pid);
            process.Kill();
            process.WaitForExit(5000);
            return pid;
        }
        catch (Exception ex) when (ex is IOException or ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            // Gone between the check and the kill, or not ours to kill: nothing left to stop.
            return null;
        }
    }

    private static string CreateRoot()
    {
        Directory.CreateDirectory(BaseDirectory);
        // /tmp/teal-tests must be traversable by the non-root server user.
        File.SetUnixFileMode(BaseDirectory, (UnixFileMode)0b111_111_111 | UnixFileMode.StickyBit);
        SweepOrphans();
        var root = Path.Combine(BaseDirectory, $"p{Environment.ProcessId}-{Guid.NewGuid():N}"[..12]);
        Directory.CreateDirectory(root);
        File.SetUnixFileMode(root, (UnixFileMode)0b111_101_101);
        AppDomain.CurrentDomain.ProcessExit += (_, _) => StopAll(root);
        return root;
    }

    private static void StopAll(string root)
    {
        foreach (var teal in RunningTeal.Keys)
        {
            teal.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }

        foreach (var server in Running.Values)
        {
            StopQuietly(server);
        }

        foreach (var server in RunningMariaDb.Values)
        {
            Teal.MySql.Instances.ManagedMariaDb.StopByPidAsync(server.PidFile, server.ConfigFile, immediate: true).GetAwaiter().GetResult();
        }

        foreach (var (pidFile, program) in RunningDaemons)
        {
            KillDaemon(pidFile, program);
        }

        TryDelete(root);
    }

    /// <summary>Stops servers left by test processes that no longer exist, and removes their files.</summary>
    private static void SweepOrphans()
    {
        foreach (var dir in Directory.EnumerateDirectories(BaseDirectory, "p*"))
        {
            var name = Path.GetFileName(dir);
            var dash = name.IndexOf('-', StringComparison.Ordinal);
            if (dash < 2 || !int.TryParse(name.AsSpan(1, dash - 1), out var pid) || Directory.Exists($"/proc/{pid}"))
            {
                continue;
            }

            // Servers a killed `teal serve` started (managed instances) live deeper down.
            Processes.TealProcess.StopServersUnder(dir);
            foreach (var instance in Directory.EnumerateDirectories(dir))
            {
                KillDaemon(Path.Combine(instance, "pgbouncer.pid"), "pgbouncer");
                // Only a mariadbd started with this directory's my.cnf is stopped (pids are reused).
                Teal.MySql.Instances.ManagedMariaDb.StopByPidAsync(Path.Combine(instance, "mariadbd.pid"), Path.Combine(instance, "my.cnf"), immediate: true).GetAwaiter().GetResult();
                try
                {
                    StopQuietly(ManagedPostgres.LoadAsync(instance, CancellationToken.None).GetAwaiter().GetResult());
                }
                catch (Teal.Core.Errors.TealException)
                {
                    // Not a server directory.
                }
            }

            TryDelete(dir);
        }
    }

    private static void StopQuietly(ManagedPostgresServer server)
    {
        try
        {
            Managed.StopAsync(server, immediate: true, CancellationToken.None).GetAwaiter().GetResult();
        }
        catch (Exception ex) when (ex is Teal.Core.Errors.TealException or IOException)
        {
            Console.Error.WriteLine($"teal tests: could not stop server in {server.Directory}: {ex.Message}");
        }
    }

    private static void TryDelete(string dir)
    {
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
