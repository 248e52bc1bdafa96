using Teal.Core.Errors;

namespace Teal.Processes;

/// <summary>
/// The OS user a managed server runs as when Teal is root (PostgreSQL refuses root; MariaDB is
/// run the same way): the files it needs are given to it, and a directory is checked to be
/// reachable by it before the server is asked to use it. Null user: Teal is not root, nothing to do.
/// </summary>
public sealed class ServerUser(string? osUser, string unreachableHint)
{
    /// <summary>Gives <paramref name="directory"/> to the user and checks it can write and enter it.</summary>
    public async Task PrepareDirectoryAsync(string directory, CancellationToken cancellationToken)
    {
        if (osUser is null)
        {
            return;
        }

        await GiveAsync(directory, cancellationToken);
        var probe = await ProcessRunner.RunAsync(new ProcessSpec("/usr/bin/test", ["-w", directory, "-a", "-x", directory]) { RunAs = osUser }, cancellationToken);
        if (!probe.Succeeded)
        {
            throw new TealException(
                "instance.directory-not-accessible",
                $"the server user '{osUser}' cannot reach {directory}",
                unreachableHint);
        }
    }

    /// <summary><c>chown USER: PATH</c>.</summary>
    public async Task GiveAsync(string path, CancellationToken cancellationToken)
    {
        if (osUser is null)
        {
            return;
        }

        var result = await ProcessRunner.RunAsync(new ProcessSpec("/bin/chown", [osUser + ":", path]), cancellationToken);
        if (!result.Succeeded)
        {
            throw new TealException("instance.chown-failed", $"could not give {path} to '{osUser}': {result.Tail()}", "check that the user exists (scripts/setup.sh)");
        }
    }

    /// <summary>
    /// Runs one of the server's programs as the user. The server's messages stay in English
    /// whatever the operator's locale: Teal matches some of them (could not bind, ready for connections).
    /// </summary>
    public Task<ProcessResult> RunAsync(string program, IReadOnlyList<string> arguments, TimeSpan timeout, CancellationToken cancellationToken) =>
        ProcessRunner.RunAsync(
            new ProcessSpec(program, arguments)
            {
                RunAs = osUser,
                Timeout = timeout,
                Environment = new Dictionary<string, string> { ["LC_ALL"] = "C", ["LANG"] = "C" },
            },
            cancellationToken);
}
