using System.Text.RegularExpressions;
using Teal.Core.Errors;

namespace Teal.Core.Instances;

/// <summary>
/// Server settings given by operators (<c>--parameter</c>, <c>--target-parameter</c>). They are
/// written into a managed server's configuration file, one <c>name = value</c> line each, so a
/// name must be a plain setting name and a value must stay on its line: anything else could add
/// settings of its own or leave a file the server refuses to start with.
/// </summary>
public static partial class ServerParameters
{
    /// <summary>Whether <paramref name="name"/> is a setting name (<c>work_mem</c>, <c>auto_explain.log_min_duration</c>).</summary>
    public static bool IsValidName(string? name) => name is not null && NamePattern().IsMatch(name);

    /// <summary>Whether <paramref name="value"/> fits on one configuration line.</summary>
    public static bool IsValidValue(string? value) => value is not null && !value.Any(char.IsControl);

    /// <summary>
    /// Refuses the first bad name or value, naming the option it came from; a bad name's hint is
    /// <paramref name="namesHint"/>, the engine's word on how its settings are spelled (<see cref="Engines.IEngine.SettingNamesHint"/>).
    /// </summary>
    public static void Validate(IReadOnlyDictionary<string, string>? parameters, string option, string namesHint)
    {
        foreach (var (name, value) in parameters ?? new Dictionary<string, string>())
        {
            if (!IsValidName(name))
            {
                throw new TealException(
                    "parameter.invalid-name",
                    $"{option}: '{Printable(name)}' is not a server setting name",
                    namesHint);
            }

            if (!IsValidValue(value))
            {
                throw new TealException(
                    "parameter.invalid-value",
                    $"{option}: the value of {name} holds a line break or another control character",
                    "give the value on one line; it goes into the server's configuration file");
            }
        }
    }

    /// <summary>Control characters shown escaped, so a refusal is one readable line.</summary>
    private static string Printable(string text) =>
        string.Concat(text.Select(c => char.IsControl(c) ? $"\\x{(int)c:x2}" : c.ToString()));

    // An identifier, or a two-part custom name (PostgreSQL's extension.setting). MariaDB also
    // reads dashes in my.cnf, but SHOW VARIABLES spells every name with underscores, as here.
    [GeneratedRegex(@"^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$")]
    private static partial Regex NamePattern();
}
