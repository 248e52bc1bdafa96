using System.CommandLine;
using System.Net;
using Teal.Server;

namespace Teal.Cli;

/// <summary>
/// One run of <c>teal</c>: where it writes, the environment it reads, and the global options
/// every verb shares. Verbs get their API client and output format from here.
/// </summary>
internal sealed class CliSession(TextReader input, TextWriter output, TextWriter error, Func<string, string?> environment)
{
    /// <summary>Standard input (a password given with <c>--password-stdin</c>).</summary>
    public TextReader Input { get; } = input;

    public TextWriter Output { get; } = output;

    public TextWriter Error { get; } = error;

    public Func<string, string?> Environment { get; } = environment;

    /// <summary>Whether redrawing with terminal escapes makes sense (a real, unredirected console).</summary>
    public bool IsTerminal => ReferenceEquals(Output, Console.Out) && !Console.IsOutputRedirected;

    /// <summary>
    /// Teal's API. May be repeated (its values come back comma-joined): <c>teal proxy</c> takes the
    /// leader and its standbys; every other verb wants one URL and refuses a list.
    /// </summary>
    public Option<string?> Server { get; } = new("--server")
    {
        Description = $"Teal's API (default: $TEAL_SERVER or {TealServerOptions.DefaultServerUrl}); `teal proxy` takes several",
        Recursive = true,
        Arity = ArgumentArity.OneOrMore,
        CustomParser = result => string.Join(',', result.Tokens.Select(t => t.Value)),
    };

    public Option<string?> Token { get; } = new("--token") { Description = "API token (default: $TEAL_TOKEN, or the local server's DATA_DIR/token)", Recursive = true };

    public Option<string> OutputFormat { get; } = CreateOutputOption();

    public Option<string?> DataDirectory { get; } = new("--data-dir") { Description = "Teal's data directory (default: $TEAL_DATA_DIR, /var/lib/teal as root, else ~/.local/share/teal)", Recursive = true };

    public bool Json(ParseResult parse) => parse.GetValue(OutputFormat) == "json";

    public string DataDirectoryFor(ParseResult parse) =>
        parse.GetValue(DataDirectory) ?? TealServerOptions.DefaultDataDirectory(Environment);

    public ApiClient Client(ParseResult parse)
    {
        var text = parse.GetValue(Server) ?? Environment("TEAL_SERVER") ?? TealServerOptions.DefaultServerUrl;
        if (!Uri.TryCreate(text, UriKind.Absolute, out var server) || (server.Scheme != Uri.UriSchemeHttp && server.Scheme != Uri.UriSchemeHttps))
        {
            throw new CliException($"'{text}' is not a server URL", "use --server http://HOST:PORT", ExitCodes.Usage);
        }

        return new ApiClient(server, parse.GetValue(Token) ?? Environment("TEAL_TOKEN") ?? LocalToken(server, parse));
    }

    /// <summary>A server on this machine shares its data directory with us: its token file is readable there.</summary>
    private string? LocalToken(Uri server, ParseResult parse)
    {
        var local = server.IsLoopback || (IPAddress.TryParse(server.Host, out var ip) && IPAddress.IsLoopback(ip));
        var file = Path.Combine(DataDirectoryFor(parse), "token");
        try
        {
            return local && File.Exists(file) ? File.ReadAllText(file).Trim() : null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    private static Option<string> CreateOutputOption()
    {
        var option = new Option<string>("--output", "-o") { Description = "table (for people) or json (the API's JSON, for scripts)", Recursive = true, DefaultValueFactory = _ => "table" };
        option.AcceptOnlyFromAmong("table", "json");
        return option;
    }
}
