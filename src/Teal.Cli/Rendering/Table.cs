namespace Teal.Cli.Rendering;

/// <summary>Aligned columns for people: a header row, then one row per item, two spaces apart.</summary>
internal sealed class Table(params string[] headers)
{
    private readonly List<string[]> _rows = [];

    public Table Add(params string?[] cells)
    {
        _rows.Add(cells.Select(c => c ?? "-").ToArray());
        return this;
    }

    public void WriteTo(TextWriter output)
    {
        var widths = headers.Select((h, i) => Math.Max(h.Length, _rows.Count == 0 ? 0 : _rows.Max(r => i < r.Length ? r[i].Length : 0))).ToArray();
        Write(output, headers, widths);
        foreach (var row in _rows)
        {
            Write(output, row, widths);
        }
    }

    private static void Write(TextWriter output, string[] cells, int[] widths)
    {
        // The last column is not padded, so lines carry no trailing spaces.
        var line = string.Join("  ", cells.Select((c, i) => i == cells.Length - 1 ? c : c.PadRight(widths[i])));
        output.WriteLine(line);
    }
}

/// <summary>How figures read in tables.</summary>
internal static class Format
{
    public static string Bytes(long? bytes) => bytes switch
    {
        null => "-",
        < 1024 => $"{bytes} B",
        < 1024 * 1024 => $"{bytes / 1024.0:0.0} KiB",
        < 1024L * 1024 * 1024 => $"{bytes / (1024.0 * 1024):0.0} MiB",
        _ => $"{bytes / (1024.0 * 1024 * 1024):0.0} GiB",
    };

    public static string Seconds(double? seconds) => seconds is null ? "-" : $"{seconds:0.00} s";

    public static string Time(DateTimeOffset? time) => time is null ? "-" : time.Value.ToUniversalTime().ToString("yyyy-MM-dd HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Enum values as the API spells them (COPY_DATA, REVERSE_REPLICATING).</summary>
    public static string Name<T>(T value)
        where T : struct, Enum =>
        System.Text.Json.JsonSerializer.Serialize(value, Teal.Server.Json.TealJson.Options).Trim('"');
}
