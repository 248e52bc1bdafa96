using System.CommandLine;
using System.CommandLine.Invocation;
using System.Text.Json;
using System.Text.Json.Nodes;
using Teal.Cli.Commands;
using Teal.Cli.Rendering;
using Teal.Core.Errors;
using Teal.Server;
using Teal.Server.Json;

namespace Teal.Cli;

/// <summary>
/// <c>teal</c>: builds the verbs, runs one, and turns what went wrong into the exit codes
/// operators and scripts rely on — 0 ok, 1 refused or user error (one line and a hint),
/// 2 usage, 70 a bug. Program and the tests call <c>RunAsync</c> the same way.
/// </summary>
internal static class TealCli
{
    public static Task<int> RunAsync(string[] args, TextWriter output, TextWriter error, Func<string, string?> environment, CancellationToken cancellationToken) =>
        RunAsync(args, Console.In, output, error, environment, cancellationToken);

    /// <summary>As above, with standard input given (<c>--password-stdin</c> reads it).</summary>
    public static async Task<int> RunAsync(string[] args, TextReader input, TextWriter output, TextWriter error, Func<string, string?> environment, CancellationToken cancellationToken)
    {
        var session = new CliSession(input, output, error, environment);
        var root = BuildRoot(session);
        var parse = root.Parse(args);
        if (parse.Action is ParseErrorAction)
        {
            foreach (var e in parse.Errors)
            {
                await error.WriteLineAsync($"error: {e.Message}");
            }

            await error.WriteLineAsync($"hint: see `{CommandPath(parse)} --help`");
            return ExitCodes.Usage;
        }

        try
        {
            // Ctrl-C cancels the verb's token; it then has this long to finish what it does.
            // `teal proxy` handles its signals itself: after SIGTERM its sessions may run on for minutes.
            var termination = parse.CommandResult.Command.Name == "proxy" ? (TimeSpan?)null : TimeSpan.FromSeconds(30);
            return await parse.InvokeAsync(new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = termination }, cancellationToken);
        }
        catch (CliException ex)
        {
            await WriteErrorAsync(error, ex.Message, ex.Hint);
            return ex.ExitCode;
        }
        catch (TealException ex)
        {
            await WriteErrorAsync(error, ex.Message, ex.Hint);
            return ExitCodes.Refused;
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            return ExitCodes.Refused;
        }
        catch (Exception ex)
        {
            await error.WriteLineAsync($"error: unexpected failure in teal (a bug): {ex.Message}");
            await error.WriteLineAsync(ex.ToString());
            return ExitCodes.Bug;
        }
    }

    /// <summary>Adds a verb group: one line per file under Commands/.</summary>
    private static RootCommand BuildRoot(CliSession session)
    {
        var root = new RootCommand("Teal: blue/green deployments for PostgreSQL and MariaDB. `teal serve` runs the control plane; every other verb is its client.")
        {
            session.Server,
            session.Token,
            session.OutputFormat,
            session.DataDirectory,
        };
        foreach (var option in root.Options)
        {
            if (option is VersionOption version)
            {
                version.Action = new PrintVersion();
            }
        }

        root.Subcommands.Add(ServeCommand.Create(session));
        root.Subcommands.Add(ProxyCommand.Create(session));
        root.Subcommands.Add(EngineCommands.Create(session));
        root.Subcommands.Add(InstanceCommands.Create(session));
        foreach (var verb in DeploymentCommands.Create(session))
        {
            root.Subcommands.Add(verb);
        }

        foreach (var verb in SwitchoverCommands.Create(session))
        {
            root.Subcommands.Add(verb);
        }

        root.Subcommands.Add(EventCommands.Create(session));
        root.Subcommands.Add(EndpointCommands.Create(session));
        root.Subcommands.Add(WebhookCommands.Create(session));
        root.Subcommands.Add(DemoCommand.Create(session));
        HelpExamples.AddTo(root);
        return root;
    }

    private static string CommandPath(ParseResult parse)
    {
        var names = new List<string>();
        for (var result = parse.CommandResult; result is not null; result = result.Parent as System.CommandLine.Parsing.CommandResult)
        {
            names.Insert(0, result.Command is RootCommand ? "teal" : result.Command.Name);
        }

        return string.Join(' ', names);
    }

    private static async Task WriteErrorAsync(TextWriter error, string message, string? hint)
    {
        // One line each, whatever the server's text holds: scripts read the first line.
        await error.WriteLineAsync($"error: {OneLine(message)}");
        if (!string.IsNullOrWhiteSpace(hint))
        {
            await error.WriteLineAsync($"hint: {OneLine(hint)}");
        }
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ");

    private sealed class PrintVersion : SynchronousCommandLineAction
    {
        public override int Invoke(ParseResult parseResult)
        {
            parseResult.InvocationConfiguration.Output.WriteLine($"teal {TealServer.Version}");
            return ExitCodes.Ok;
        }
    }
}

/// <summary>Helpers the verbs share.</summary>
internal static class Verb
{
    /// <summary>Writes the API's JSON, indented (the <c>--output json</c> form of every verb).</summary>
    public static void WriteJson(this CliSession session, string body)
    {
        if (string.IsNullOrWhiteSpace(body))
        {
            return;
        }

        session.Output.WriteLine(JsonNode.Parse(body)?.ToJsonString(TealJson.Indented) ?? body);
    }

    public static void WriteJson<T>(this CliSession session, T value) =>
        session.Output.WriteLine(JsonSerializer.Serialize(value, TealJson.Indented));

    /// <summary><c>--name k=v</c>, repeatable; a value without <c>=</c> is a usage error.</summary>
    public static Option<string[]> KeyValues(string name, string description)
    {
        var option = new Option<string[]>(name) { Description = description, DefaultValueFactory = _ => [] };
        option.Validators.Add(result =>
        {
            foreach (var token in result.Tokens)
            {
                if (token.Value.IndexOf('=', StringComparison.Ordinal) <= 0)
                {
                    result.AddError($"{name} expects KEY=VALUE, not '{token.Value}'");
                }
            }
        });
        return option;
    }

    /// <summary>
    /// <c>--name setting=value</c> for server settings: as <see cref="KeyValues"/>, and the
    /// setting must be a setting name and the value one line (both go into a configuration file).
    /// </summary>
    public static Option<string[]> ServerSettings(string name, string description)
    {
        var option = KeyValues(name, description);
        option.Validators.Add(result =>
        {
            foreach (var pair in result.Tokens.Select(t => t.Value.Split('=', 2)).Where(p => p.Length == 2 && p[0].Length > 0))
            {
                if (!Teal.Core.Instances.ServerParameters.IsValidName(pair[0]))
                {
                    result.AddError($"{name}: '{pair[0]}' is not a server setting name (letters, digits and underscores, optionally one dot, as the server's SHOW spells it: max_connections)");
                }
                else if (!Teal.Core.Instances.ServerParameters.IsValidValue(pair[1]))
                {
                    result.AddError($"{name}: the value of {pair[0]} holds a line break or another control character");
                }
            }
        });
        return option;
    }

    /// <summary>
    /// A whole number of seconds within a range. Parsed here rather than by the option's type, so
    /// that "abc" is answered with what is expected instead of a .NET type name.
    /// </summary>
    public static Option<int?> Seconds(string name, string description, int min, int max)
    {
        var option = new Option<int?>(name)
        {
            Description = description,
            CustomParser = result =>
            {
                var text = result.Tokens.Count == 1 ? result.Tokens[0].Value : string.Empty;
                if (int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var seconds))
                {
                    return seconds;
                }

                result.AddError($"{name} expects whole seconds, {min}–{max}, not '{text}'");
                return null;
            },
        };
        return option;
    }

    public static Dictionary<string, string> ToDictionary(string[]? pairs) =>
        (pairs ?? []).Select(p => p.Split('=', 2)).ToDictionary(p => p[0], p => p[1]);
}
