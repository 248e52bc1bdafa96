using Teal.Core.Errors;

namespace Teal.Server.State;

/// <summary>The errors both state stores give for the same thing, in the same words.</summary>
internal static class StateErrors
{
    public static TealException DuplicateName(string what, string name, Exception inner) =>
        new($"{what}.duplicate-name", $"{Article(what)} {what} named '{name}' already exists", $"choose another name (see `{ListCommand(what)}`)", inner) { Kind = TealErrorKind.Conflict };

    public static void RequireChanged(int rows, string what, string key)
    {
        if (rows == 0)
        {
            throw new TealException($"{what}.not-found", $"no {what} '{key}'", $"see `{ListCommand(what)}`") { Kind = TealErrorKind.NotFound };
        }
    }

    public static TealException NewerSchema(string where, int version, int current) =>
        new(
            "state.newer-schema",
            $"the state {where} has schema version {version}; this Teal knows versions up to {current}",
            "run the Teal release that wrote it (or a newer one), or restore a backup made by this release")
        { Kind = TealErrorKind.Unavailable };

    private static string Article(string what) => what[0] is 'a' or 'e' or 'i' or 'o' or 'u' ? "an" : "a";

    private static string ListCommand(string what) => what == "deployment" ? "teal list" : $"teal {what} list";
}
