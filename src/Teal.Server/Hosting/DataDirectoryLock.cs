using System.Globalization;
using System.Text.Json;
using Teal.Core.Errors;

namespace Teal.Server.Hosting;

/// <summary>
/// One control plane per data directory. Two <c>teal serve</c> on one directory would both run
/// recovery, both drive the switchover and both bind the endpoints: one could unfence blue while
/// the other flips to green. The first takes an exclusive lock on <c>teal.lock</c> (an advisory
/// <c>flock</c>, which the kernel releases when the process dies, even by <c>kill -9</c>) before
/// it opens the state store or binds anything; a second start finds the lock taken and refuses,
/// naming the first from <c>serve.json</c>.
/// </summary>
/// <remarks>
/// The holder's pid and address live in a second file because .NET takes a shared
/// <c>flock</c> to open any file for reading, which the exclusive lock refuses: the owner of the
/// lock could not be read from the locked file itself.
/// </remarks>
public sealed class DataDirectoryLock : IDisposable
{
    public const string LockFileName = "teal.lock";
    public const string OwnerFileName = "serve.json";

    private readonly FileStream _lock;

    private DataDirectoryLock(string directory, FileStream held)
    {
        Directory = directory;
        _lock = held;
    }

    /// <summary>The data directory this lock holds.</summary>
    public string Directory { get; }

    /// <summary>
    /// Takes the lock on <paramref name="dataDirectory"/> for this process, recording
    /// <paramref name="listen"/>; refuses (<c>serve.already-running</c>) when another process holds it.
    /// </summary>
    public static DataDirectoryLock Acquire(string dataDirectory, string listen)
    {
        var path = Path.Combine(dataDirectory, LockFileName);
        FileStream held;
        try
        {
            // FileShare.None is an exclusive, non-blocking flock on Unix.
            held = new FileStream(path, new FileStreamOptions
            {
                Mode = FileMode.OpenOrCreate,
                Access = FileAccess.ReadWrite,
                Share = FileShare.None,
                UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
            });
        }
        catch (IOException)
        {
            var owner = ReadOwner(dataDirectory);
            throw new TealException(
                "serve.already-running",
                $"another teal serve ({owner}) already runs on the data directory {dataDirectory}",
                "use that server (TEAL_URL), stop it first, or give this one another --data-dir")
            { Kind = TealErrorKind.Conflict };
        }

        var taken = new DataDirectoryLock(dataDirectory, held);
        taken.Record(listen);
        return taken;
    }

    /// <summary>Records the address actually bound (a port 0 becomes the real one).</summary>
    public void Record(string listen)
    {
        var owner = new Owner(Environment.ProcessId, listen, DateTimeOffset.UtcNow);
        var path = Path.Combine(Directory, OwnerFileName);
        var temporary = path + ".tmp";
        File.WriteAllText(temporary, JsonSerializer.Serialize(owner));
        File.Move(temporary, path, overwrite: true);
    }

    public void Dispose() => _lock.Dispose();

    private static string ReadOwner(string dataDirectory)
    {
        try
        {
            var owner = JsonSerializer.Deserialize<Owner>(File.ReadAllText(Path.Combine(dataDirectory, OwnerFileName)));
            return owner is null
                ? "pid unknown"
                : string.Create(CultureInfo.InvariantCulture, $"pid {owner.Pid}, listening on {owner.Listen}");
        }
        catch (Exception ex) when (ex is IOException or JsonException or UnauthorizedAccessException)
        {
            // Written right after the lock is taken: a start a moment earlier may not have it yet.
            return "pid unknown";
        }
    }

    private sealed record Owner(int Pid, string Listen, DateTimeOffset StartedAt);
}
