using System.Globalization;
using System.Text.RegularExpressions;

namespace Teal.Postgres.Replication;

/// <summary>
/// Compares a parameter value as an operator writes it ("1GB", "on", "250ms") with what the
/// server reports, which normalizes units ("1GB" may read back as "1024MB") and booleans.
/// </summary>
internal static partial class SettingValues
{
    private static readonly Dictionary<string, double> Units = new(StringComparer.Ordinal)
    {
        ["B"] = 1,
        ["kB"] = 1024,
        ["MB"] = 1024 * 1024,
        ["GB"] = 1024.0 * 1024 * 1024,
        ["TB"] = 1024.0 * 1024 * 1024 * 1024,
        ["us"] = 0.001,
        ["ms"] = 1,
        ["s"] = 1000,
        ["min"] = 60_000,
        ["h"] = 3_600_000,
        ["d"] = 86_400_000,
    };

    /// <param name="expected">The operator's value.</param>
    /// <param name="shown">current_setting() (with the unit the server picked).</param>
    /// <param name="raw">pg_settings.setting (in <paramref name="unit"/>).</param>
    /// <param name="unit">pg_settings.unit, e.g. "8kB", "ms", or empty.</param>
    /// <param name="type">pg_settings.vartype.</param>
    public static bool Equivalent(string expected, string shown, string raw, string unit, string type)
    {
        if (string.Equals(expected.Trim(), shown, StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        if (type == "bool")
        {
            return Bool(expected) is { } e && Bool(shown) == e;
        }

        if (type is not ("integer" or "real"))
        {
            return string.Equals(expected.Trim().Trim('\''), shown, StringComparison.OrdinalIgnoreCase);
        }

        var e2 = Quantity(expected, defaultUnit: unit);
        var a = Quantity(raw, defaultUnit: unit);
        return e2 is not null && a is not null && Math.Abs(e2.Value - a.Value) < 1e-6 * Math.Max(1, Math.Abs(a.Value));
    }

    private static bool? Bool(string value) => value.Trim().ToLowerInvariant() switch
    {
        "on" or "true" or "yes" or "1" => true,
        "off" or "false" or "no" or "0" => false,
        _ => null,
    };

    /// <summary>A number with an optional unit, in bytes or milliseconds; a bare number is in <paramref name="defaultUnit"/>.</summary>
    private static double? Quantity(string text, string defaultUnit)
    {
        var m = QuantityPattern().Match(text.Trim().Trim('\''));
        if (!m.Success || !double.TryParse(m.Groups[1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out _))
        {
            return null;
        }

        var number = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        var unitText = m.Groups[2].Value.Length > 0 ? m.Groups[2].Value : defaultUnit;
        if (unitText.Length == 0)
        {
            return number;
        }

        // pg_settings units can carry a multiplier ("8kB" for shared_buffers).
        var um = QuantityPattern().Match(unitText);
        var multiplier = um.Success && um.Groups[1].Value.Length > 0 ? double.Parse(um.Groups[1].Value, CultureInfo.InvariantCulture) : 1;
        var name = um.Success ? um.Groups[2].Value : unitText;
        return Units.TryGetValue(name, out var factor) ? number * multiplier * factor : null;
    }

    [GeneratedRegex(@"^(-?\d*\.?\d*)\s*([a-zA-Z]*)$")]
    private static partial Regex QuantityPattern();
}
