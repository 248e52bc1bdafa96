using System.Text.Json;
using Teal.Core.Secrets;
using Teal.Server.Json;
using Teal.Server.RemoteProxies;

namespace Teal.Server.ProxyHost;

/// <summary>
/// The last route table a <c>teal proxy</c> had from the control plane, so that it starts serving
/// after its own restart even while the control plane is gone. Holds addresses and endpoint
/// settings, never a password (the table has none). Replaced atomically, 0600.
/// </summary>
public static class RouteFile
{
    public static ProxyRouteTable? Load(string path)
    {
        try
        {
            return File.Exists(path) ? JsonSerializer.Deserialize<ProxyRouteTable>(File.ReadAllText(path), TealJson.Options) : null;
        }
        catch (JsonException)
        {
            // A file that cannot be read is as good as none: the control plane sends the table again.
            return null;
        }
    }

    public static void Save(string path, ProxyRouteTable table)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null && !Directory.Exists(directory))
        {
            Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }

        PrivateFile.Replace(path, JsonSerializer.Serialize(table, TealJson.Options));
    }

    /// <summary>Whether two tables route the same way (their time aside).</summary>
    public static bool SameRoutes(ProxyRouteTable? a, ProxyRouteTable? b) =>
        a is not null && b is not null && JsonSerializer.Serialize(a.Endpoints, TealJson.Options) == JsonSerializer.Serialize(b.Endpoints, TealJson.Options);
}
