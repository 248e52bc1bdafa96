using System.Globalization;

namespace Teal.Postgres.Instances;

/// <summary>
/// How the OS user Teal runs as logs in to a server Teal provisioned while that server's
/// pg_hba.conf fence refuses everyone else: over the server's abstract Unix socket, with peer
/// authentication mapped (pg_ident.conf, map <see cref="MapName"/>) from that one OS user to any
/// role. Teal's proxy uses it to log the sessions it will move in on a still-fenced green before
/// the write pause, so that no login is left inside it (ARCHITECTURE.md, "The fence"). The map
/// gives that OS user nothing it lacks already: it reads Teal's secrets, the password of Teal's
/// superuser login among them. PostgreSQL 16 and later take one line for every role (the
/// <c>all</c> keyword in pg_ident.conf's database-username column), written at create; on 15 a
/// line per role that can log in is written before each switchover's pause
/// (<c>Replication/HbaFence.MapRolesAsync</c>).
/// </summary>
public static class LocalLogin
{
    /// <summary>The first version whose pg_ident.conf maps a user to <c>all</c> roles in one line.</summary>
    public const int AllRolesMajorVersion = 16;

    public const string MapName = "teal_proxy";

    /// <summary>
    /// An abstract socket: no file, so no path length limit under a long data dir and no directory
    /// permissions to get wrong; peer authentication checks who connects. The port names the
    /// socket in it (<c>@teal/.s.PGSQL.5433</c>), so servers on different ports do not meet.
    /// </summary>
    public const string SocketDirectory = "@teal";

    /// <summary>The rule a fenced pg_hba.conf keeps for it (after Teal's own, before the rejects).</summary>
    public const string HbaRule = "local all all peer map=" + MapName;

    /// <summary>The OS user this process runs as: peer authentication sees it on the socket.</summary>
    public static string OsUser => Environment.UserName;

    private static string MapLine => $"{MapName} \"{OsUser}\" all";

    /// <summary>The comment Teal writes above its map lines.</summary>
    private const string MapComment = "# Written by Teal: its proxy logs moving sessions in here while Teal's fence refuses every other login.";

    /// <summary>
    /// <paramref name="ident"/> (a pg_ident.conf) with Teal's map lines replaced by one per role in
    /// <paramref name="roles"/> (PostgreSQL 15, which has no <c>all</c> there). Role names that need
    /// a quote or a line break are left out: their sessions log in once green opens.
    /// </summary>
    public static string WithRoleLines(string ident, IEnumerable<string> roles)
    {
        var kept = ident.Split('\n').Where(l => l.Trim() != MapComment && !l.TrimStart().StartsWith(MapName + " ", StringComparison.Ordinal));
        var text = string.Join('\n', kept).TrimEnd('\n');
        var lines = roles.Where(r => r.Length > 0 && !r.Any(c => c is '"' || char.IsControl(c))).Order(StringComparer.Ordinal).Select(r => $"{MapName} \"{OsUser}\" \"{r}\"").ToList();
        return lines.Count == 0 ? text + "\n" : $"{text}\n{MapComment}\n{string.Join('\n', lines)}\n";
    }

    /// <summary>Adds the map line for <see cref="OsUser"/> to a server's pg_ident.conf unless it is there.</summary>
    public static async Task MapTealAsync(string identFile, CancellationToken cancellationToken)
    {
        var existing = File.Exists(identFile) ? await File.ReadAllTextAsync(identFile, cancellationToken) : string.Empty;
        if (existing.Split('\n').Any(l => l.Trim() == MapLine))
        {
            return;
        }

        var separator = existing.Length == 0 || existing.EndsWith('\n') ? string.Empty : "\n";
        await File.AppendAllTextAsync(
            identFile,
            $"{separator}{MapComment}\n{MapLine}\n",
            cancellationToken);
    }

    /// <summary>
    /// The socket of a server with <paramref name="directories"/> (its unix_socket_directories)
    /// and <paramref name="port"/>, as .NET connects to it (an abstract name starts with a NUL);
    /// null when it has none.
    /// </summary>
    public static string? SocketPath(string directories, int port)
    {
        var first = directories.Split(',')[0].Trim();
        if (first.Length == 0)
        {
            return null;
        }

        var path = string.Create(CultureInfo.InvariantCulture, $"{first}/.s.PGSQL.{port}");
        return first[0] == '@' ? "\0" + path[1..] : path;
    }
}
