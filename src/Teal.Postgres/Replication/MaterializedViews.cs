using Teal.Core.Engines;

namespace Teal.Postgres.Replication;

/// <summary>
/// Materialized views reach green empty: the schema copy creates them WITH NO DATA and logical
/// replication carries table rows only. Unrefreshed, a SELECT on one fails after the switchover
/// with "has not been populated". Teal refreshes on green every view populated on blue: before
/// the deployment is AVAILABLE and again at switchover, once green has blue's last write.
/// </summary>
internal sealed class MaterializedViews(LinkSessions sessions)
{
    public async Task<IReadOnlyList<string>> RefreshOnGreenAsync(CancellationToken cancellationToken)
    {
        HashSet<string> populated;
        await using (var blue = await sessions.OpenAsync(Side.Blue, cancellationToken))
        {
            populated = [.. await blue.QueryAsync(
                "SELECT schemaname || '.' || matviewname FROM pg_matviews WHERE ispopulated AND schemaname <> 'teal'",
                r => r.GetString(0),
                cancellationToken)];
        }

        if (populated.Count == 0)
        {
            return [];
        }

        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var views = await green.QueryAsync(
            """
            SELECT n.nspname::text, c.relname::text, c.relispopulated,
                   EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL),
                   array(SELECT DISTINCT un.nspname || '.' || u.relname FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                         JOIN pg_class u ON u.oid = d.refobjid AND u.relkind = 'm' AND u.oid <> c.oid JOIN pg_namespace un ON un.oid = u.relnamespace
                         WHERE r.ev_class = c.oid)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'm'
            """,
            r => (Schema: r.GetString(0), Name: r.GetString(1), Populated: r.GetBoolean(2), Unique: r.GetBoolean(3), Uses: r.GetFieldValue<string[]>(4)),
            cancellationToken);

        // A view built on another view is refreshed after it.
        var byName = views.ToDictionary(v => Sql.Display(v.Schema, v.Name));
        var ordered = new List<string>();
        var visited = new HashSet<string>();
        void Visit(string name)
        {
            if (!visited.Add(name) || !byName.TryGetValue(name, out var view))
            {
                return;
            }

            foreach (var used in view.Uses)
            {
                Visit(used);
            }

            ordered.Add(name);
        }

        foreach (var name in byName.Keys.Order(StringComparer.Ordinal))
        {
            Visit(name);
        }

        var refreshed = new List<string>();
        foreach (var name in ordered.Where(populated.Contains))
        {
            var view = byName[name];
            // CONCURRENTLY keeps readers going (after the switchover green has clients); it needs
            // a unique index and a view populated already.
            var concurrently = view.Populated && view.Unique ? "CONCURRENTLY " : string.Empty;
            await green.ExecuteAsync($"REFRESH MATERIALIZED VIEW {concurrently}{Sql.Qualified(view.Schema, view.Name)}", cancellationToken);
            refreshed.Add(name);
        }

        return refreshed;
    }
}
