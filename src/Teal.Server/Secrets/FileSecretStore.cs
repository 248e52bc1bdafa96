using System.Security.Cryptography;
using System.Text.Json;
using Teal.Core.Secrets;

namespace Teal.Server.Secrets;

/// <summary>
/// Passwords in <c>secrets.json</c> (mode 0600) under the data directory, apart from the state
/// file. Every write replaces the file atomically (temp file, 0600 before it holds anything,
/// fsync, rename), so a crash leaves the old or the new file, never half of one.
/// References <c>env:NAME</c> and <c>file:/path</c> are read from the environment or a file
/// the operator manages, and are never written.
/// </summary>
public sealed class FileSecretStore : ISecretStore
{
    public const string FileName = "secrets.json";

    private const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    private readonly Lock _lock = new();
    private readonly Dictionary<string, string> _secrets;

    public FileSecretStore(string dataDirectory)
    {
        Path = System.IO.Path.Combine(dataDirectory, FileName);
        if (File.Exists(Path))
        {
            // An operator's restore or copy may have widened the mode: narrow it again.
            File.SetUnixFileMode(Path, OwnerOnly);
            _secrets = JsonSerializer.Deserialize<Dictionary<string, string>>(File.ReadAllText(Path)) ?? [];
        }
        else
        {
            _secrets = [];
        }
    }

    public string Path { get; }

    public string? Read(string reference)
    {
        if (OperatorSecrets.TryRead(reference, out var operators))
        {
            return operators;
        }

        lock (_lock)
        {
            return _secrets.GetValueOrDefault(reference);
        }
    }

    public void Write(string reference, string value)
    {
        lock (_lock)
        {
            _secrets[reference] = value;
            Save();
        }
    }

    public void Remove(string reference)
    {
        lock (_lock)
        {
            if (_secrets.Remove(reference))
            {
                Save();
            }
        }
    }

    private void Save()
    {
        var temp = $"{Path}.{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(4))}.tmp";
        try
        {
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = OwnerOnly };
            using (var stream = new FileStream(temp, options))
            {
                JsonSerializer.Serialize(stream, _secrets, Indented);
                stream.Flush(flushToDisk: true);
            }

            // The umask cannot widen UnixCreateMode, but it is set again explicitly: the file
            // must never be readable by others under its final name.
            File.SetUnixFileMode(temp, OwnerOnly);
            File.Move(temp, Path, overwrite: true);
        }
        finally
        {
            File.Delete(temp);
        }
    }
}
