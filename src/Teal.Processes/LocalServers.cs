using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text.Json;
using Teal.Core.Errors;

namespace Teal.Processes;

/// <summary>
/// What every engine's managed servers on this machine need alike: a free port, a generated
/// password, the description file Teal keeps in a server's directory, and removing that
/// directory. What differs (initdb/pg_ctl against mariadb-install-db/mariadbd) stays in the engine.
/// </summary>
public static class LocalServers
{
    /// <summary>A port nobody listens on right now (the kernel's choice for an ephemeral bind).</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        return port;
    }

    /// <summary>A random password for a managed account (URL-safe, 32 characters).</summary>
    public static string GeneratePassword() =>
        Convert.ToBase64String(RandomNumberGenerator.GetBytes(24)).Replace('+', 'x').Replace('/', 'y');

    /// <summary>Reads a managed server's description (<paramref name="fileName"/> in <paramref name="directory"/>).</summary>
    /// <param name="directory">The server's directory.</param>
    /// <param name="fileName">The engine's description file (each engine has its own name, so sweeps tell them apart).</param>
    /// <param name="what">What the directory should hold, for the refusal ("Teal-managed MariaDB server").</param>
    /// <param name="cancellationToken">Cancels the read.</param>
    public static async Task<T> LoadStateAsync<T>(string directory, string fileName, string what, CancellationToken cancellationToken)
    {
        var path = Path.Combine(directory, fileName);
        if (!File.Exists(path))
        {
            throw new TealException("instance.not-managed", $"{directory} holds no {what}", null) { Kind = TealErrorKind.NotFound };
        }

        await using var stream = File.OpenRead(path);
        return await JsonSerializer.DeserializeAsync<T>(stream, cancellationToken: cancellationToken)
            ?? throw new InvalidDataException($"{path} is empty");
    }

    /// <summary>Writes a managed server's description for <see cref="LoadStateAsync{T}"/>.</summary>
    public static Task SaveStateAsync<T>(string directory, string fileName, T server, CancellationToken cancellationToken) =>
        File.WriteAllTextAsync(Path.Combine(directory, fileName), JsonSerializer.Serialize(server), cancellationToken);

    /// <summary>Deletes a server's directory, retrying briefly: a stopped or killed server may still be writing its last log lines.</summary>
    public static async Task RemoveDirectoryAsync(string directory)
    {
        for (var attempt = 0; attempt < 5; attempt++)
        {
            try
            {
                if (Directory.Exists(directory))
                {
                    Directory.Delete(directory, recursive: true);
                }

                return;
            }
            catch (IOException) when (attempt < 4)
            {
                await Task.Delay(100);
            }
        }
    }
}
