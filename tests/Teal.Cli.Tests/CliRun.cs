namespace Teal.Cli.Tests;

/// <summary>What one in-process run of <c>teal</c> printed and returned.</summary>
public sealed record CliRun(int ExitCode, string Stdout, string Stderr)
{
    public string[] ErrorLines => Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    /// <summary>Runs <c>teal ARGS</c> through the same entry as Program, with its own environment.</summary>
    public static Task<CliRun> RunAsync(IReadOnlyDictionary<string, string> environment, params string[] args) =>
        RunAsync(environment, CancellationToken.None, args);

    /// <summary>As above; cancelling <paramref name="cancellationToken"/> is the operator's Ctrl-C.</summary>
    public static async Task<CliRun> RunAsync(IReadOnlyDictionary<string, string> environment, CancellationToken cancellationToken, params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        // StringWriter is not thread-safe, and a verb may write from pool threads.
        var exit = await TealCli.RunAsync(args, TextWriter.Synchronized(output), TextWriter.Synchronized(error), name => environment.GetValueOrDefault(name), cancellationToken);
        return new CliRun(exit, output.ToString(), error.ToString());
    }

    public static Task<CliRun> RunAsync(params string[] args) => RunAsync(new Dictionary<string, string>(), args);

    public override string ToString() => $"exit {ExitCode}\nstdout:\n{Stdout}\nstderr:\n{Stderr}";
}
