using System.Globalization;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Processes;
using Teal.MySql.Engines;

namespace Teal.MySql.Replication;

/// <summary>
/// mariadb-dump from blue piped into the mariadb client on green, for what is best copied as
/// SQL text: table and view definitions, routines, events, triggers, accounts. Credentials go
/// in a 0600 defaults file that is deleted afterwards, never on a command line.
/// </summary>
internal sealed class DumpTool(MariaDbEngineCatalog catalog)
{
    public async Task<string> DumpAsync(ConnectionInfo blue, IReadOnlyList<string> arguments, CancellationToken cancellationToken)
    {
        var tools = await catalog.ClientToolsAsync(cancellationToken);
        using var credentials = new DefaultsFile(blue);
        var result = await ProcessRunner.RunAsync(
            new ProcessSpec(MariaDbEngineCatalog.Tool(tools, "mariadb-dump"), [$"--defaults-extra-file={credentials.Path}", .. arguments]) { Timeout = TimeSpan.FromHours(1) },
            cancellationToken);
        if (!result.Succeeded)
        {
            throw new TealException("copy.dump-failed", $"mariadb-dump on blue failed: {result.Tail()}", "see the message above; the deployment can be deleted and created again");
        }

        return result.StandardOutput;
    }

    /// <summary>Runs SQL text on green without writing it to green's binlog (it is not green's history).</summary>
    public async Task LoadAsync(ConnectionInfo green, string sql, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(sql))
        {
            return;
        }

        var tools = await catalog.ClientToolsAsync(cancellationToken);
        using var credentials = new DefaultsFile(green);
        var result = await ProcessRunner.RunAsync(
            new ProcessSpec(MariaDbEngineCatalog.Tool(tools, "mariadb"), [$"--defaults-extra-file={credentials.Path}", "--binary-mode", "--init-command=SET SESSION sql_log_bin = 0"]) { StandardInput = sql, Timeout = TimeSpan.FromHours(1) },
            cancellationToken);
        if (!result.Succeeded)
        {
            throw new TealException("copy.load-failed", $"loading blue's definitions into green failed: {result.Tail()}", "see the message above; the deployment can be deleted and created again");
        }
    }

    /// <summary>A <c>[client]</c> option file only the current user can read.</summary>
    private sealed class DefaultsFile : IDisposable
    {
        public DefaultsFile(ConnectionInfo connection)
        {
            Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"teal-{Guid.NewGuid():N}.cnf");
            using (File.Create(Path))
            {
            }

            File.SetUnixFileMode(Path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            var text = "[client]\n"
                + $"host={connection.Host}\n"
                + $"port={connection.Port.ToString(CultureInfo.InvariantCulture)}\n"
                + $"user={connection.User}\n"
                + (connection.Password is null ? string.Empty : $"password=\"{connection.Password.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal)}\"\n")
                + "protocol=TCP\n";
            File.WriteAllText(Path, text);
        }

        public string Path { get; }

        public void Dispose() => File.Delete(Path);
    }
}
