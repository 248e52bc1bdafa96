using System.Globalization;
using System.Text;
using Teal.Core.Endpoints;
using Teal.Core.Errors;

namespace Teal.Postgres.PgBouncer;

/// <summary>One <c>[databases]</c> entry: where its line sits in the file and its connection settings.</summary>
/// <param name="Name">The entry's name (unquoted).</param>
/// <param name="LineStart">Offset of the line in the file's text.</param>
/// <param name="LineLength">Length of the line without its line break.</param>
/// <param name="Settings">The <c>key=value</c> pairs of the entry, in order.</param>
public sealed record PgBouncerEntry(string Name, int LineStart, int LineLength, IReadOnlyList<PgBouncerSetting> Settings)
{
    /// <summary>A setting's value, or null when the entry does not set it.</summary>
    public string? this[string key] => Settings.LastOrDefault(s => s.Key == key)?.Value;
}

/// <summary>A <c>key=value</c> pair of an entry, with where its value sits in the line (to replace it in place).</summary>
public sealed record PgBouncerSetting(string Key, string Value, int ValueStart, int ValueLength);

/// <summary>
/// PgBouncer's ini file, read and rewritten one entry line at a time. The text is handled as
/// Latin-1 (one char per byte) so that every byte Teal does not change is written back exactly
/// as it was, whatever encoding the operator's comments use.
/// </summary>
public static class PgBouncerConfigFile
{
    private static readonly Encoding Bytes = Encoding.Latin1;

    public static string Decode(byte[] content) => Bytes.GetString(content);

    public static byte[] Encode(string text) => Bytes.GetBytes(text);

    /// <summary>
    /// The entry named <paramref name="database"/> in <c>[databases]</c>, or null. When the name
    /// appears twice the last line wins, as in PgBouncer.
    /// </summary>
    public static PgBouncerEntry? FindEntry(string text, string database)
    {
        PgBouncerEntry? found = null;
        var inDatabases = false;
        for (var start = 0; ; )
        {
            var end = text.IndexOf('\n', start);
            end = end < 0 ? text.Length : end;
            var length = end - start;
            if (length > 0 && text[end - 1] == '\r')
            {
                length--;
            }

            var line = text.AsSpan(start, length);
            var trimmed = line.Trim();
            if (trimmed.StartsWith('['))
            {
                inDatabases = trimmed.StartsWith("[databases]", StringComparison.OrdinalIgnoreCase);
            }
            else if (inDatabases && !trimmed.IsEmpty && trimmed[0] is not (';' or '#') && ParseEntry(line.ToString(), start) is { } entry && entry.Name == database)
            {
                found = entry;
            }

            if (end == text.Length)
            {
                break;
            }

            start = end + 1;
        }

        return found;
    }

    /// <summary>
    /// Points the entry at <paramref name="target"/>: its <c>host</c>, <c>port</c> and
    /// <c>dbname</c> values are replaced where they stand (added at the end when missing); every
    /// other setting, the rest of the line and every other line stay as they were.
    /// </summary>
    public static string Repoint(string text, string database, EndpointTarget target)
    {
        var entry = FindEntry(text, database)
            ?? throw new TealException("endpoint.pgbouncer-entry-missing", $"PgBouncer's ini has no [databases] entry '{database}'", $"add '{database} = host=… port=… dbname=…' to its [databases] section");
        var line = text.Substring(entry.LineStart, entry.LineLength);
        var wanted = new (string Key, string Value)[]
        {
            ("host", target.Host),
            ("port", target.Port.ToString(CultureInfo.InvariantCulture)),
            ("dbname", target.Database),
        };

        var rewritten = new StringBuilder(line);
        var missing = new List<string>();
        // Replace from the right so that earlier offsets stay valid.
        foreach (var (key, value) in wanted.Reverse())
        {
            var setting = entry.Settings.LastOrDefault(s => s.Key == key);
            if (setting is null)
            {
                missing.Insert(0, $"{key}={Quote(value)}");
                continue;
            }

            rewritten.Remove(setting.ValueStart, setting.ValueLength).Insert(setting.ValueStart, Quote(value));
        }

        if (missing.Count > 0)
        {
            var content = rewritten.ToString().TrimEnd();
            rewritten.Clear().Append(content).Append(' ').AppendJoin(' ', missing).Append(line.AsSpan(line.TrimEnd().Length));
        }

        return string.Concat(text.AsSpan(0, entry.LineStart), rewritten.ToString(), text.AsSpan(entry.LineStart + entry.LineLength));
    }

    /// <summary>Quotes a value the way PgBouncer's connection-string parser reads it (single quotes, doubled inside).</summary>
    public static string Quote(string value)
    {
        // The file is Latin-1 text here: a UTF-8 database name becomes its bytes.
        var bytes = Bytes.GetString(Encoding.UTF8.GetBytes(value));
        return bytes.Length > 0 && !bytes.Any(c => char.IsWhiteSpace(c) || c is '\'' or '=' or '"')
            ? bytes
            : "'" + bytes.Replace("'", "''", StringComparison.Ordinal) + "'";
    }

    private static PgBouncerEntry? ParseEntry(string line, int lineStart)
    {
        var i = SkipSpaces(line, 0);
        string name;
        if (i < line.Length && line[i] == '"')
        {
            // A quoted name: "" stands for one double quote.
            var builder = new StringBuilder();
            i++;
            while (true)
            {
                if (i >= line.Length)
                {
                    return null;
                }

                if (line[i] == '"')
                {
                    if (i + 1 < line.Length && line[i + 1] == '"')
                    {
                        builder.Append('"');
                        i += 2;
                        continue;
                    }

                    i++;
                    break;
                }

                builder.Append(line[i++]);
            }

            name = builder.ToString();
        }
        else
        {
            var nameStart = i;
            while (i < line.Length && !char.IsWhiteSpace(line[i]) && line[i] != '=')
            {
                i++;
            }

            name = line[nameStart..i];
        }

        i = SkipSpaces(line, i);
        if (name.Length == 0 || i >= line.Length || line[i] != '=')
        {
            return null;
        }

        return new PgBouncerEntry(name, lineStart, line.Length, ParseSettings(line, i + 1));
    }

    /// <summary>Reads <c>key=value</c> pairs as PgBouncer does: spaces allowed around '=', values bare or single-quoted.</summary>
    private static List<PgBouncerSetting> ParseSettings(string line, int position)
    {
        var settings = new List<PgBouncerSetting>();
        var i = position;
        while (true)
        {
            i = SkipSpaces(line, i);
            if (i >= line.Length)
            {
                return settings;
            }

            var keyStart = i;
            while (i < line.Length && !char.IsWhiteSpace(line[i]) && line[i] != '=')
            {
                i++;
            }

            var key = line[keyStart..i].ToLowerInvariant();
            i = SkipSpaces(line, i);
            if (i >= line.Length || line[i] != '=')
            {
                // Not a connection setting PgBouncer would accept either; keep what was understood.
                return settings;
            }

            i = SkipSpaces(line, i + 1);
            var valueStart = i;
            string value;
            if (i < line.Length && line[i] == '\'')
            {
                var builder = new StringBuilder();
                for (i++; i < line.Length; i++)
                {
                    if (line[i] == '\'')
                    {
                        if (i + 1 < line.Length && line[i + 1] == '\'')
                        {
                            // '' inside quotes is one quote.
                            i++;
                        }
                        else
                        {
                            i++;
                            break;
                        }
                    }

                    builder.Append(line[i]);
                }

                value = builder.ToString();
            }
            else
            {
                while (i < line.Length && !char.IsWhiteSpace(line[i]))
                {
                    i++;
                }

                value = line[valueStart..i];
            }

            // Values compare with what the console reports, which is UTF-8.
            settings.Add(new PgBouncerSetting(key, Encoding.UTF8.GetString(Bytes.GetBytes(value)), valueStart, i - valueStart));
        }
    }

    private static int SkipSpaces(string line, int i)
    {
        while (i < line.Length && char.IsWhiteSpace(line[i]))
        {
            i++;
        }

        return i;
    }
}
