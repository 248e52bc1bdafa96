using System.Text;

namespace Teal.Postgres.Replication;

/// <summary>
/// Turns what the DDL event trigger can see — the client's whole query and one row per DDL
/// command run by it — into each command's own statement. PostgreSQL does not hand an event
/// trigger the text of the command (only <c>current_query()</c>, which holds every statement
/// the client sent in one message, <c>INSERT … SELECT</c> after a <c>CREATE TABLE</c> included),
/// and rebuilding DDL from <c>pg_event_trigger_ddl_commands()</c> needs a C extension. So the
/// query is cut into statements here (quotes, dollar quotes and comments respected) and the
/// rows of one query are matched, in order, to the DDL statements whose leading words match
/// their command tag. A row that matches no statement ran inside a function or a DO block: it
/// is kept as the whole query and marked not replayable (replaying it could run the function's
/// writes on green twice); <c>add-tables</c> then builds what it made from blue's catalogs.
/// </summary>
internal static class DdlStatements
{
    /// <summary>First words of statements that fire event triggers and change the schema.</summary>
    private static readonly HashSet<string> DdlVerbs = new(StringComparer.OrdinalIgnoreCase) { "CREATE", "ALTER", "DROP", "COMMENT", "GRANT", "REVOKE", "SECURITY", "IMPORT" };

    /// <summary>Words between the verb and the object kind that a command tag leaves out.</summary>
    private static readonly HashSet<string> Modifiers = new(StringComparer.OrdinalIgnoreCase) { "OR", "REPLACE", "UNIQUE", "RECURSIVE", "TRUSTED", "PROCEDURAL", "CONSTRAINT", "UNLOGGED" };

    /// <summary>One recorded row, as read from the DDL log.</summary>
    public sealed record Row(long Id, DateTimeOffset At, string CommandTag, string Query, long Xid, DateTimeOffset? QueryStart, string? SearchPath, string? Objects, bool Acknowledged);

    /// <summary>A row with its own statement.</summary>
    public sealed record Entry(Row Row, string Statement, bool Replayable);

    /// <summary>Gives every row its statement; rows of one client query are matched together.</summary>
    public static List<Entry> Assign(IReadOnlyList<Row> rows)
    {
        var result = new List<Entry>(rows.Count);
        foreach (var query in rows.GroupBy(r => (r.Xid, r.QueryStart, r.Query)))
        {
            var statements = Split(query.Key.Query).Where(IsDdl).ToList();
            var next = 0;
            foreach (var row in query.OrderBy(r => r.Id))
            {
                var found = -1;
                for (var i = next; i < statements.Count; i++)
                {
                    if (MatchesTag(statements[i], row.CommandTag))
                    {
                        found = i;
                        break;
                    }
                }

                if (found < 0)
                {
                    result.Add(new Entry(row, query.Key.Query.Trim(), Replayable: false));
                    continue;
                }

                result.Add(new Entry(row, statements[found], Replayable: true));
                next = found + 1;
            }
        }

        return result.OrderBy(e => e.Row.Id).ToList();
    }

    public static bool IsDdl(string statement) => Words(statement, 1) is [var verb] && DdlVerbs.Contains(verb);

    /// <summary>
    /// Whether a statement can be the one a command tag names: <c>CREATE UNIQUE INDEX</c> for
    /// "CREATE INDEX", <c>CREATE OR REPLACE VIEW</c> for "CREATE VIEW". A temporary table's
    /// statement (<c>CREATE TEMP TABLE</c>) matches nothing: the trigger does not record it.
    /// </summary>
    public static bool MatchesTag(string statement, string tag)
    {
        var tagWords = tag.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var words = Words(statement, 8);
        if (words.Count == 0 || !words[0].Equals(tagWords[0], StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        var kind = words.Skip(1).Where(w => !Modifiers.Contains(w)).ToList();
        // "CREATE TABLE AS" and "SELECT INTO" tags: the statement starts CREATE TABLE.
        var wanted = tagWords.Skip(1).Take(2).Where(w => !w.Equals("AS", StringComparison.OrdinalIgnoreCase)).ToList();
        return wanted.Count <= kind.Count && wanted.Select((w, i) => w.Equals(kind[i], StringComparison.OrdinalIgnoreCase)).All(x => x);
    }

    /// <summary>The first <paramref name="count"/> words of a statement, comments skipped.</summary>
    private static List<string> Words(string statement, int count)
    {
        var words = new List<string>();
        var i = 0;
        while (i < statement.Length && words.Count < count)
        {
            var c = statement[i];
            if (char.IsWhiteSpace(c))
            {
                i++;
            }
            else if (c == '-' && At(statement, i + 1, '-'))
            {
                i = SkipLineComment(statement, i);
            }
            else if (c == '/' && At(statement, i + 1, '*'))
            {
                i = SkipBlockComment(statement, i);
            }
            else if (char.IsLetter(c) || c == '_')
            {
                var start = i;
                while (i < statement.Length && (char.IsLetterOrDigit(statement[i]) || statement[i] == '_'))
                {
                    i++;
                }

                words.Add(statement[start..i]);
            }
            else
            {
                break;
            }
        }

        return words;
    }

    /// <summary>
    /// Cuts a query into statements at semicolons outside string literals (standard, <c>E''</c>
    /// with backslash escapes), quoted identifiers, dollar quotes and comments. Each statement
    /// is returned trimmed, without its semicolon; empty ones are dropped.
    /// </summary>
    public static List<string> Split(string query)
    {
        var statements = new List<string>();
        var current = new StringBuilder();
        var i = 0;
        while (i < query.Length)
        {
            var c = query[i];
            var start = i;
            if (c == ';')
            {
                Flush(statements, current);
                i++;
                continue;
            }

            if (c == '-' && At(query, i + 1, '-'))
            {
                i = SkipLineComment(query, i);
            }
            else if (c == '/' && At(query, i + 1, '*'))
            {
                i = SkipBlockComment(query, i);
            }
            else if (c == '\'')
            {
                var escapes = i > 0 && (query[i - 1] is 'E' or 'e') && (i < 2 || !(char.IsLetterOrDigit(query[i - 2]) || query[i - 2] == '_'));
                i = SkipQuoted(query, i, '\'', escapes);
            }
            else if (c == '"')
            {
                i = SkipQuoted(query, i, '"', backslashEscapes: false);
            }
            else if (c == '$' && DollarTag(query, i) is { } tag)
            {
                var end = query.IndexOf(tag, i + tag.Length, StringComparison.Ordinal);
                i = end < 0 ? query.Length : end + tag.Length;
            }
            else
            {
                i++;
            }

            current.Append(query, start, i - start);
        }

        Flush(statements, current);
        return statements;
    }

    private static void Flush(List<string> statements, StringBuilder current)
    {
        var text = current.ToString().Trim();
        current.Clear();
        if (Words(text, 1).Count > 0)
        {
            statements.Add(text);
        }
    }

    private static bool At(string s, int i, char c) => i < s.Length && s[i] == c;

    private static int SkipLineComment(string s, int i)
    {
        var end = s.IndexOf('\n', i);
        return end < 0 ? s.Length : end + 1;
    }

    /// <summary>Block comments nest in PostgreSQL.</summary>
    private static int SkipBlockComment(string s, int i)
    {
        var depth = 0;
        while (i < s.Length)
        {
            if (s[i] == '/' && At(s, i + 1, '*'))
            {
                depth++;
                i += 2;
            }
            else if (s[i] == '*' && At(s, i + 1, '/'))
            {
                depth--;
                i += 2;
                if (depth == 0)
                {
                    return i;
                }
            }
            else
            {
                i++;
            }
        }

        return i;
    }

    private static int SkipQuoted(string s, int i, char quote, bool backslashEscapes)
    {
        i++;
        while (i < s.Length)
        {
            if (backslashEscapes && s[i] == '\\')
            {
                i += 2;
            }
            else if (s[i] == quote)
            {
                // A doubled quote is the quote itself.
                if (At(s, i + 1, quote))
                {
                    i += 2;
                }
                else
                {
                    return i + 1;
                }
            }
            else
            {
                i++;
            }
        }

        return i;
    }

    /// <summary><c>$$</c> or <c>$tag$</c> at <paramref name="i"/> (not a parameter like <c>$1</c>).</summary>
    private static string? DollarTag(string s, int i)
    {
        if (i > 0 && (char.IsLetterOrDigit(s[i - 1]) || s[i - 1] == '_'))
        {
            return null;
        }

        var j = i + 1;
        if (j < s.Length && char.IsDigit(s[j]))
        {
            return null;
        }

        while (j < s.Length && (char.IsLetterOrDigit(s[j]) || s[j] == '_'))
        {
            j++;
        }

        return At(s, j, '$') ? s[i..(j + 1)] : null;
    }
}
