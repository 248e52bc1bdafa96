using System.Globalization;
using System.Runtime.InteropServices;
using Teal.Core.Errors;
using Teal.Core.Processes;

namespace Teal.Server.Hosting;

/// <summary>
/// Teal's data directory holds the state file, the secrets file and the token: it is owner
/// only, 0700. When Teal runs as root, managed servers run as another OS user and their files
/// live below it (<c>instances/NAME</c>), so that user's group gets traversal and nothing else:
/// 0710, group = the server user's group — it reaches its own directory by name and can list or
/// read nothing of Teal's.
///
/// A directory that is already there is made so when it is Teal's (empty, or holding Teal's
/// files: older versions created it 0755). A directory open to others that holds anything else
/// is refused rather than narrowed: <c>--data-dir /tmp</c> or a home directory must not have
/// its mode changed under everyone else who uses it.
/// </summary>
internal static partial class DataDirectory
{
    private const UnixFileMode OwnerAll = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    // serve.log: where scripts/demo.sh (and operators after it) send teal serve's output.
    private static readonly string[] TealFiles = ["teal.db", "token", "secrets.json", "instances", "serve.log"];

    /// <summary>Creates or checks <paramref name="path"/>; <paramref name="serverOsUser"/> is who runs managed servers when Teal is root.</summary>
    public static void Prepare(string path, string? serverOsUser)
    {
        var group = ProcessRunner.IsRoot && serverOsUser is not null ? PrimaryGroup(serverOsUser) : null;
        var wanted = group is null ? OwnerAll : OwnerAll | UnixFileMode.GroupExecute;
        if (!Directory.Exists(path))
        {
            Directory.CreateDirectory(path, wanted);
        }
        else if (IsTeals(path))
        {
            File.SetUnixFileMode(path, wanted);
        }
        else if ((File.GetUnixFileMode(path) & ~wanted) != 0)
        {
            throw new TealException(
                "server.data-dir-shared",
                $"the data directory {path} is open to other users (mode {Octal(File.GetUnixFileMode(path))}) and holds files that are not Teal's",
                $"point --data-dir (or TEAL_DATA_DIR) at a directory of Teal's own (it is made {Octal(wanted)}), or empty this one");
        }
        else
        {
            // Already private and not Teal's to reshape: used as it is.
            return;
        }

        if (group is { } gid && Chown(path, uint.MaxValue, gid) != 0)
        {
            throw new TealException("server.data-dir-group", $"could not give {path} the group of '{serverOsUser}' (errno {Marshal.GetLastPInvokeError()})", "check that the data directory is on a local file system Teal (root) may change");
        }
    }

    /// <summary>Empty, or holding one of the files Teal keeps there.</summary>
    private static bool IsTeals(string path) =>
        !Directory.EnumerateFileSystemEntries(path).Any() || TealFiles.Any(f => Path.Exists(Path.Combine(path, f)));

    /// <summary>The user's primary group from /etc/passwd (the servers' user is a local system user).</summary>
    private static uint? PrimaryGroup(string user)
    {
        foreach (var line in File.ReadLines("/etc/passwd"))
        {
            var fields = line.Split(':');
            if (fields.Length > 3 && fields[0] == user && uint.TryParse(fields[3], NumberStyles.None, CultureInfo.InvariantCulture, out var gid))
            {
                return gid;
            }
        }

        return null;
    }

    private static string Octal(UnixFileMode mode) => Convert.ToString((int)mode, 8).PadLeft(4, '0');

    // DllImport as in AtomicFile: .NET has no chown, and a process per start is not worth it.
    [DllImport("libc", EntryPoint = "chown", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int Chown([MarshalAs(UnmanagedType.LPUTF8Str)] string path, uint owner, uint group);
}
