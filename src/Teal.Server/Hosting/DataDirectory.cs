using Teal.Core.Errors;
using Teal.Processes;

namespace Teal.Server.Hosting;

/// <summary>
/// Teal's data directory holds the state file, the secrets file and the token: it is owner
/// only, 0700. When Teal runs as root, managed servers run as other OS users (<c>postgres</c>,
/// <c>mysql</c>: one per engine, with no group in common) and their files live below it
/// (<c>instances/NAME</c>), so others get traversal and nothing else: 0711 — a server user
/// reaches its own directory by name and can list nothing; Teal's own files in it (state,
/// secrets, token) are 0600 each.
///
/// A directory that is already there is made so when it is Teal's (empty, or holding Teal's
/// files: older versions created it 0755). A directory open to others that holds anything else
/// is refused rather than narrowed: <c>--data-dir /tmp</c> or a home directory must not have
/// its mode changed under everyone else who uses it.
/// </summary>
internal static class DataDirectory
{
    private const UnixFileMode OwnerAll = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    // serve.log: where scripts/demo.sh (and operators after it) send teal serve's output.
    private static readonly string[] TealFiles = ["teal.db", "token", "secrets.json", "state.key", "instances", "serve.log"];

    /// <summary>Creates or checks <paramref name="path"/> (as root, every engine runs its managed servers as an OS user of its own).</summary>
    public static void Prepare(string path)
    {
        var wanted = ProcessRunner.IsRoot ? OwnerAll | UnixFileMode.OtherExecute : OwnerAll;
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

        // Otherwise already private and not Teal's to reshape: used as it is.
    }

    /// <summary>Empty, or holding one of the files Teal keeps there.</summary>
    private static bool IsTeals(string path) =>
        !Directory.EnumerateFileSystemEntries(path).Any() || TealFiles.Any(f => Path.Exists(Path.Combine(path, f)));

    private static string Octal(UnixFileMode mode) => Convert.ToString((int)mode, 8).PadLeft(4, '0');
}
