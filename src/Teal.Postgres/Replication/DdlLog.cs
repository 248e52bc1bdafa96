using System.Text.RegularExpressions;
using Npgsql;
using Teal.Core.Deployments;
using Teal.Core.Engines;

namespace Teal.Postgres.Replication;

/// <summary>
/// The DDL the event trigger recorded on blue: read with each command's own statement,
/// acknowledged, run on green (<c>apply-ddl</c>), and acknowledged on its own once what it made
/// is on green (after <c>add-tables</c> built it from blue's catalogs).
/// </summary>
internal sealed partial class DdlLog(LinkSessions sessions)
{
    private string Name => sessions.Spec.Name;

    /// <summary>Unacknowledged entries, each with its statement (rows of one query are read together to cut it).</summary>
    public async Task<List<DdlStatements.Entry>> ReadPendingAsync(NpgsqlConnection blue, CancellationToken cancellationToken)
    {
        if (!await TealObjects.SchemaExistsAsync(blue, cancellationToken))
        {
            return [];
        }

        var rows = await blue.QueryAsync(
            """
            SELECT l.id, l.at, l.command_tag, l.statement, l.xid, l.query_start, l.search_path, l.objects, l.acknowledged
            FROM teal.ddl_log l
            WHERE l.deployment = $1
              AND (NOT l.acknowledged OR EXISTS (SELECT 1 FROM teal.ddl_log p WHERE p.deployment = l.deployment AND NOT p.acknowledged
                                                 AND p.xid = l.xid AND p.query_start IS NOT DISTINCT FROM l.query_start))
            ORDER BY l.id
            """,
            r => new DdlStatements.Row(
                r.GetInt64(0),
                Utc(r.GetDateTime(1)),
                r.GetString(2),
                r.GetString(3),
                r.GetInt64(4),
                r.IsDBNull(5) ? null : Utc(r.GetDateTime(5)),
                r.NullableString(6),
                r.NullableString(7),
                r.GetBoolean(8)),
            cancellationToken,
            Name);
        return DdlStatements.Assign(rows).Where(e => !e.Row.Acknowledged).ToList();
    }

    public static PendingDdl ToPending(DdlStatements.Entry e) =>
        new(e.Row.Id, e.Row.At, e.Row.CommandTag, e.Statement) { Replayable = e.Replayable, Objects = e.Row.Objects };

    public async Task AcknowledgeAsync(NpgsqlConnection blue, IReadOnlyCollection<long> ids, CancellationToken cancellationToken)
    {
        if (ids.Count > 0)
        {
            await blue.ExecuteAsync("UPDATE teal.ddl_log SET acknowledged = true WHERE deployment = $1 AND id = ANY($2)", cancellationToken, Name, ids.ToArray());
        }
    }

    /// <summary>
    /// Runs the pending statements on green in the order blue ran them, each on its own (so
    /// <c>CREATE INDEX CONCURRENTLY</c> works) with blue's search_path, through Teal's session,
    /// which writes through green's fence. Each one that succeeds is acknowledged at once; one
    /// that finds its object already there (made by <c>add-tables</c>, or applied by hand) is
    /// acknowledged as such. The first failure stops the run: later statements may depend on it.
    /// </summary>
    public async Task<List<DdlApplied>> ApplyAsync(CancellationToken cancellationToken)
    {
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var result = new List<DdlApplied>();
        foreach (var entry in await ReadPendingAsync(blue, cancellationToken))
        {
            if (!entry.Replayable)
            {
                if (await SatisfiedAsync(green, entry, cancellationToken))
                {
                    await AcknowledgeAsync(blue, [entry.Row.Id], cancellationToken);
                    result.Add(new DdlApplied(entry.Row.Id, entry.Statement, "already on green"));
                    continue;
                }

                result.Add(new DdlApplied(entry.Row.Id, entry.Statement, $"not run: {entry.Row.CommandTag} ran inside this query, which may do more than DDL"));
                break;
            }

            var outcome = await RunAsync(green, entry, cancellationToken);
            result.Add(new DdlApplied(entry.Row.Id, entry.Statement, outcome));
            if (outcome.StartsWith("failed", StringComparison.Ordinal))
            {
                break;
            }

            await AcknowledgeAsync(blue, [entry.Row.Id], cancellationToken);
        }

        return result;
    }

    private static async Task<string> RunAsync(NpgsqlConnection green, DdlStatements.Entry entry, CancellationToken cancellationToken)
    {
        await green.ExecuteAsync("SELECT set_config('search_path', $1, false)", cancellationToken, entry.Row.SearchPath ?? "\"$user\", public");
        try
        {
            await green.ExecuteAsync(entry.Statement, cancellationToken);
            return "applied";
        }
        catch (PostgresException ex) when (IsAlreadyDone(ex.SqlState, entry.Row.CommandTag))
        {
            return $"already on green ({ex.MessageText})";
        }
        catch (PostgresException ex)
        {
            return $"failed: {ex.MessageText} ({ex.SqlState})";
        }
        finally
        {
            await green.ExecuteAsync("RESET search_path", CancellationToken.None);
        }
    }

    /// <summary>The object exists already (CREATE, ADD) or is gone already (DROP): green has the statement's effect.</summary>
    private static bool IsAlreadyDone(string sqlState, string tag) => sqlState switch
    {
        PostgresErrorCodes.DuplicateTable or PostgresErrorCodes.DuplicateColumn or PostgresErrorCodes.DuplicateSchema
            or PostgresErrorCodes.DuplicateObject or PostgresErrorCodes.DuplicateFunction => true,
        PostgresErrorCodes.UndefinedTable or PostgresErrorCodes.UndefinedColumn or PostgresErrorCodes.UndefinedObject
            or PostgresErrorCodes.InvalidSchemaName => tag.StartsWith("DROP", StringComparison.Ordinal),
        _ => false,
    };

    /// <summary>
    /// Acknowledges every pending entry whose effect green now has: the tables and schemas a
    /// CREATE made exist there, the column a lone <c>ALTER TABLE … ADD COLUMN</c> added is there.
    /// Returns the ids acknowledged.
    /// </summary>
    public async Task<List<long>> AcknowledgeSatisfiedAsync(CancellationToken cancellationToken)
    {
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var satisfied = new List<long>();
        foreach (var entry in await ReadPendingAsync(blue, cancellationToken))
        {
            if (await SatisfiedAsync(green, entry, cancellationToken))
            {
                satisfied.Add(entry.Row.Id);
            }
        }

        await AcknowledgeAsync(blue, satisfied, cancellationToken);
        return satisfied;
    }

    private static async Task<bool> SatisfiedAsync(NpgsqlConnection green, DdlStatements.Entry entry, CancellationToken cancellationToken)
    {
        var objects = (entry.Row.Objects ?? string.Empty).Split("; ", StringSplitOptions.RemoveEmptyEntries)
            .Select(o => o.Split(' ', 2))
            .Where(o => o.Length == 2)
            .Select(o => (Type: o[0], Identity: o[1]))
            .ToList();
        var tag = entry.Row.CommandTag;
        if (tag is "CREATE TABLE" or "CREATE TABLE AS" or "SELECT INTO" or "CREATE SCHEMA")
        {
            var made = objects.Where(o => o.Type is "table" or "schema").ToList();
            if (made.Count == 0)
            {
                return false;
            }

            foreach (var (type, identity) in made)
            {
                if (!await SchemaDrift.ExistsAsync(green, type, identity, cancellationToken))
                {
                    return false;
                }
            }

            return true;
        }

        if (tag == "ALTER TABLE" && entry.Replayable && AddColumn(entry.Statement) is { } column && objects.FirstOrDefault(o => o.Type == "table") is { Identity: { } table })
        {
            return await green.ScalarAsync<bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) AND attname = $2 AND attnum > 0 AND NOT attisdropped)",
                cancellationToken,
                table,
                column);
        }

        return false;
    }

    /// <summary>The column of an <c>ALTER TABLE … ADD [COLUMN] name …</c> with no other clause; null otherwise.</summary>
    public static string? AddColumn(string statement)
    {
        var m = AddColumnStatement().Match(statement);
        if (!m.Success || HasTopLevelComma(statement))
        {
            return null;
        }

        var name = m.Groups["c"].Value;
        return name.StartsWith('"') ? name[1..^1].Replace("\"\"", "\"", StringComparison.Ordinal) : name.ToLowerInvariant();
    }

    private static bool HasTopLevelComma(string statement)
    {
        var depth = 0;
        var quoted = false;
        foreach (var c in statement)
        {
            switch (c)
            {
                case '\'' or '"':
                    quoted = !quoted;
                    break;
                case '(' when !quoted:
                    depth++;
                    break;
                case ')' when !quoted:
                    depth--;
                    break;
                case ',' when !quoted && depth == 0:
                    return true;
            }
        }

        return false;
    }

    private static DateTimeOffset Utc(DateTime value) => new(DateTime.SpecifyKind(value, DateTimeKind.Utc));

    [GeneratedRegex("""^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?:"(?:[^"]|"")+"|\w+)(?:\s*\.\s*(?:"(?:[^"]|"")+"|\w+))?\s+ADD\s+(?!CONSTRAINT\b|PRIMARY\b|UNIQUE\b|CHECK\b|FOREIGN\b|EXCLUDE\b)(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?<c>"(?:[^"]|"")+"|\w+)""", RegexOptions.IgnoreCase)]
    private static partial Regex AddColumnStatement();
}
