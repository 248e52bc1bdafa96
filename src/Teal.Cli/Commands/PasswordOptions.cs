using System.CommandLine;

namespace Teal.Cli.Commands;

/// <summary>
/// Where a password comes from when it must not sit in a command line: a file, an environment
/// variable or stdin. Every local user can read any process's arguments (<c>ps</c>,
/// /proc/PID/cmdline), so a password inside <c>--connection</c> is visible to them for as long
/// as <c>teal</c> runs. The CLI reads the password and sends it to the API in a body field.
/// </summary>
internal sealed class PasswordOptions
{
    public PasswordOptions(string prefix, string whose)
    {
        File = new Option<string?>($"--{prefix}password-file") { Description = $"Read {whose} password from this file (its first line; keep the file 0600)" };
        Environment = new Option<string?>($"--{prefix}password-env") { Description = $"Read {whose} password from this environment variable (e.g. PGPASSWORD)" };
        Stdin = new Option<bool>($"--{prefix}password-stdin") { Description = $"Read {whose} password from the first line of standard input" };
    }

    public Option<string?> File { get; }

    public Option<string?> Environment { get; }

    public Option<bool> Stdin { get; }

    /// <summary>What to put in a connection option's help: the warning and the way around it.</summary>
    public static string ArgvWarning(string prefix) =>
        $"a password written here is visible to every local user in ps while teal runs: leave it out and use --{prefix}password-file, --{prefix}password-env or --{prefix}password-stdin";

    public void AddTo(Command command)
    {
        ArgumentNullException.ThrowIfNull(command);
        command.Options.Add(File);
        command.Options.Add(Environment);
        command.Options.Add(Stdin);
        command.Validators.Add(result =>
        {
            var given = new[] { result.GetResult(File), result.GetResult(Environment), result.GetResult(Stdin) }.Count(r => r is { Implicit: false });
            if (given > 1)
            {
                result.AddError($"give the password one way: {File.Name}, {Environment.Name} or {Stdin.Name}");
            }
        });
    }

    /// <summary>The password from whichever option was given, or null; a source that yields none is an error.</summary>
    public async Task<string?> ReadAsync(ParseResult parse, CliSession session, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(parse);
        ArgumentNullException.ThrowIfNull(session);
        string? text;
        string from;
        if (parse.GetValue(File) is { } path)
        {
            from = $"password file {path}";
            try
            {
                text = await System.IO.File.ReadAllTextAsync(path, cancellationToken);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new CliException($"cannot read the {from}: {ex.Message}", $"check the path and that it is readable by {System.Environment.UserName}");
            }
        }
        else if (parse.GetValue(Environment) is { } name)
        {
            from = $"environment variable {name}";
            text = session.Environment(name)
                ?? throw new CliException($"the {from} is not set", $"export {name}=… before running teal, or name another variable with {Environment.Name}");
        }
        else if (parse.GetValue(Stdin))
        {
            from = "standard input";
            text = await session.Input.ReadLineAsync(cancellationToken);
        }
        else
        {
            return null;
        }

        // The first line: a file written with echo ends with a line break that is not part of it.
        var password = (text ?? string.Empty).Split('\n', 2)[0].TrimEnd('\r');
        return password.Length > 0
            ? password
            : throw new CliException($"the {from} holds no password (its first line is empty)", "put the password on the first line");
    }
}
