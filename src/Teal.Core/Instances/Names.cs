using System.Text.RegularExpressions;
using Teal.Core.Errors;

namespace Teal.Core.Instances;

/// <summary>Names of instances, deployments and endpoints: lower-case letters, digits and dashes.</summary>
public static partial class Names
{
    public static void Validate(string what, string name)
    {
        if (!Pattern().IsMatch(name ?? string.Empty))
        {
            throw new TealException(
                $"{what}.invalid-name",
                $"'{name}' is not a valid {what} name",
                "use 1–63 lower-case letters, digits and dashes, starting with a letter (e.g. orders-db)");
        }
    }

    [GeneratedRegex("^[a-z][a-z0-9-]{0,62}$")]
    private static partial Regex Pattern();
}
