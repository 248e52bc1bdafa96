using System.Globalization;
using System.Runtime.InteropServices;
using Teal.Processes;

namespace Teal.Postgres.PgBouncer;

/// <summary>The owner of a file, to give a replacement file the same one.</summary>
public sealed record FileOwner(uint UserId, uint GroupId);

/// <summary>
/// Replaces a file's content so that a reader (PgBouncer on RELOAD, or after a restart) sees
/// either the old or the new file, never half of one: write a temporary file next to it, fsync,
/// rename over it, fsync the directory. The replacement keeps the original's mode and — when
/// Teal runs as root — its owner, so the operator's PgBouncer can still read it and they can
/// still edit it. A symbolic link is followed: its target is replaced, the link stays.
/// </summary>
public static class AtomicFile
{
    private const int OpenReadOnly = 0;
    private const int OpenDirectory = 0x10000;

    /// <summary>The path that is really written when <paramref name="path"/> is a (chain of) symbolic link(s).</summary>
    public static string ResolveTarget(string path) =>
        new FileInfo(path).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? Path.GetFullPath(path);

    /// <summary>
    /// The file's owner (read with stat(1): .NET has no API for it). Read ahead of time so that
    /// the write itself spawns no process.
    /// </summary>
    public static async Task<FileOwner?> ReadOwnerAsync(string path, CancellationToken cancellationToken)
    {
        var result = await ProcessRunner.RunAsync(new ProcessSpec("/usr/bin/stat", ["-L", "-c", "%u %g", path]) { Timeout = TimeSpan.FromSeconds(10) }, cancellationToken);
        var parts = result.StandardOutput.Trim().Split(' ');
        return result.Succeeded && parts.Length == 2
            && uint.TryParse(parts[0], CultureInfo.InvariantCulture, out var uid) && uint.TryParse(parts[1], CultureInfo.InvariantCulture, out var gid)
            ? new FileOwner(uid, gid)
            : null;
    }

    /// <summary>Replaces <paramref name="path"/>'s content with <paramref name="content"/>.</summary>
    /// <param name="path">The file to replace (links followed).</param>
    /// <param name="content">The new bytes.</param>
    /// <param name="owner">Owner to give the new file (root only); null keeps whoever Teal runs as.</param>
    /// <param name="cancellationToken">Cancels before the rename only; after it the write is done.</param>
    public static async Task WriteAsync(string path, byte[] content, FileOwner? owner, CancellationToken cancellationToken)
    {
        var target = ResolveTarget(path);
        var directory = Path.GetDirectoryName(target) ?? "/";
        var temporary = Path.Combine(directory, $".{Path.GetFileName(target)}.teal-{Guid.NewGuid():N}");
        var mode = File.GetUnixFileMode(target);
        try
        {
            await using (var stream = new FileStream(temporary, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = mode }))
            {
                await stream.WriteAsync(content, cancellationToken);
                stream.Flush(flushToDisk: true);
            }

            // The umask may have narrowed the create mode.
            File.SetUnixFileMode(temporary, mode);
            if (owner is not null && ProcessRunner.IsRoot && Chown(temporary, owner.UserId, owner.GroupId) != 0)
            {
                throw new IOException($"could not give {temporary} the owner of {target} (errno {Marshal.GetLastPInvokeError()})");
            }

            cancellationToken.ThrowIfCancellationRequested();
            File.Move(temporary, target, overwrite: true);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }

        // The rename is durable only once the directory is on disk: without this a crash right
        // after a switchover could bring back the ini that points at blue.
        SyncDirectory(directory);
    }

    private static void SyncDirectory(string directory)
    {
        var fd = Open(directory, OpenReadOnly | OpenDirectory);
        if (fd < 0)
        {
            return;
        }

        _ = Fsync(fd);
        _ = Close(fd);
    }

    // DllImport rather than LibraryImport: the source-generated form needs unsafe code enabled
    // for the whole project, for four calls with plain int/uint/string arguments.
    [DllImport("libc", EntryPoint = "chown", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int Chown([MarshalAs(UnmanagedType.LPUTF8Str)] string path, uint owner, uint group);

    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int Open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", EntryPoint = "fsync", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int Fsync(int fd);

    [DllImport("libc", EntryPoint = "close", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int Close(int fd);
}
