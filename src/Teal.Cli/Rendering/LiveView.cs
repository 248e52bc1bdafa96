using Spectre.Console;
using Spectre.Console.Rendering;

namespace Teal.Cli.Rendering;

/// <summary>
/// A display redrawn in place while the CLI waits (Spectre.Console's live display), used only on
/// a real terminal with human output. Elsewhere — a pipe, CI, <c>--output json</c> — the caller
/// gets no updater and prints its plain lines as before, so scripts see the same text.
/// </summary>
internal static class LiveView
{
    /// <summary>
    /// Runs <paramref name="body"/> with an updater when the output is a terminal, with null
    /// otherwise. The last frame stays on screen when the body returns.
    /// </summary>
    public static async Task<T> RunAsync<T>(CliSession session, bool json, Func<Action<IRenderable>?, Task<T>> body)
    {
        if (json || !session.IsTerminal)
        {
            return await body(null);
        }

        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(session.Output) });
        T result = default!; // Assigned by the body before Live returns.
        await console.Live(new Text(string.Empty)).AutoClear(false).Overflow(VerticalOverflow.Ellipsis).StartAsync(async context =>
        {
            result = await body(renderable =>
            {
                context.UpdateTarget(renderable);
                context.Refresh();
            });
        });
        return result;
    }

    /// <summary>Plain text as a renderable (no markup parsing: messages may hold brackets).</summary>
    public static IRenderable Text(string text) => new Text(text);
}
