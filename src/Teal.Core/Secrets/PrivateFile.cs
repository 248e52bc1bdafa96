using System.Security.Cryptography;
using System.Text;

namespace Teal.Core.Secrets;

/// <summary>
/// Files that hold a secret (a password file for initdb, the API token). Each is created with
/// mode 0600 by the call that creates it, never created and narrowed afterwards: between the
/// two, another local user could open it and keep the descriptor.
/// </summary>
public static class PrivateFile
{
    /// <summary>rw for the owner, nothing for anyone else.</summary>
    public const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>
    /// Writes a file that must not exist yet (an existing one is removed first: its mode and
    /// owner are not Teal's to trust).
    /// </summary>
    public static void WriteNew(string path, string content)
    {
        ArgumentNullException.ThrowIfNull(content);
        File.Delete(path);
        using var stream = new FileStream(path, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = OwnerOnly });
        stream.Write(Encoding.UTF8.GetBytes(content));
        stream.Flush(flushToDisk: true);
    }

    /// <summary>
    /// Replaces <paramref name="path"/> atomically: a new 0600 file beside it, then a rename, so
    /// a reader sees the old or the new content and the name never points at a wider file.
    /// </summary>
    public static void Replace(string path, string content)
    {
        var temporary = $"{path}.{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}.tmp";
        try
        {
            WriteNew(temporary, content);
            File.Move(temporary, path, overwrite: true);
        }
        finally
        {
            File.Delete(temporary);
        }
    }

    /// <summary>Takes group and other permissions away from an existing file (a restore or a copy may have widened them).</summary>
    public static void Narrow(string path)
    {
        if (File.Exists(path) && (File.GetUnixFileMode(path) & ~(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute)) != 0)
        {
            File.SetUnixFileMode(path, File.GetUnixFileMode(path) & (UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute));
        }
    }
}
