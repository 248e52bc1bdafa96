using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Core.Guardrails;

namespace Teal.Postgres.Replication;

/// <summary>
/// Logical slots that change-data-capture consumers read (<c>teal create --cdc-slot</c>;
/// ARCHITECTURE.md, "CDC slots"). A cutover makes a slot of the same name and plugin on the
/// side it opens while that side is fenced and has applied the final position of the side it
/// leaves: a consumer reads the old slot up to that final position, then the new slot from its
/// start, and sees every committed change once.
/// </summary>
internal sealed class CdcSlots(LinkSessions sessions, TimeProvider time)
{
    private IReadOnlyList<string> Names => sessions.Spec.CdcSlots;

    /// <summary>Create refuses a name that is not a logical slot of blue's database, naming the slot and the fix.</summary>
    public static async Task<CheckResult> CheckAtCreateAsync(NpgsqlConnection blue, IReadOnlyList<string> names, CancellationToken cancellationToken)
    {
        var found = (await blue.QueryAsync(
            "SELECT slot_name::text, slot_type, coalesce(database::text, '') FROM pg_replication_slots WHERE slot_name = ANY($1)",
            r => (Name: r.GetString(0), Type: r.GetString(1), Database: r.GetString(2)),
            cancellationToken,
            names.ToArray())).ToDictionary(s => s.Name);
        var database = await blue.ScalarAsync<string>("SELECT current_database()::text", cancellationToken);
        var problems = new List<string>();
        foreach (var name in names)
        {
            if (!found.TryGetValue(name, out var slot))
            {
                problems.Add($"{name} does not exist on blue");
            }
            else if (slot.Type != "logical")
            {
                problems.Add($"{name} is a {slot.Type} slot, not a logical one");
            }
            else if (slot.Database != database)
            {
                problems.Add($"{name} decodes database {slot.Database}, not the deployment's {database}");
            }
        }

        return problems.Count == 0
            ? CheckResult.Pass("blue.cdc-slots", $"CDC slot(s) {string.Join(", ", names)} are logical slots of {database} on blue")
            : CheckResult.Fail(
                "blue.cdc-slots",
                $"--cdc-slot names what Teal cannot carry to green: {string.Join("; ", problems)}",
                $"create each on blue in {database} (SELECT pg_create_logical_replication_slot('NAME', 'pgoutput'), or your consumer's plugin) and let its consumer start, or leave out its --cdc-slot");
    }

    /// <summary>
    /// Switchover guardrail: each slot exists on blue; one whose consumer has not confirmed
    /// blue's current position warns with its lag (at the cutover it must catch up to blue's
    /// final position, or it reads the rest after; <c>--cdc-wait</c> makes the cutover wait).
    /// </summary>
    public async Task<CheckResult> CheckAsync(CancellationToken cancellationToken)
    {
        var slots = (await ReadSideAsync(Side.Blue, cancellationToken)).ToList();
        var missing = slots.Where(s => !s.Exists).Select(s => s.Name).ToList();
        if (missing.Count > 0)
        {
            return CheckResult.Fail("blue.cdc-slots", $"CDC slot(s) missing on blue: {string.Join(", ", missing)}", "re-create them on blue for their consumers, or create the deployment again without them");
        }

        var behind = slots.Where(s => s.LagBytes > 0).ToList();
        return behind.Count == 0
            ? CheckResult.Pass("blue.cdc-slots", $"every CDC consumer confirmed blue's current position ({string.Join(", ", slots.Select(s => s.Name))})")
            : CheckResult.Warn(
                "blue.cdc-slots",
                $"CDC consumer(s) behind blue: {string.Join(", ", behind.Select(s => $"{s.Name} {s.LagBytes} bytes behind{(s.Active ? string.Empty : " (not connected)")}"))}",
                "they must read blue's slot up to blue's final position (in the cdc-slots-created event) before green's; create the deployment with --cdc-wait to make the switchover wait for them");
    }

    /// <summary>Both sides' slots of the deployment's names, for the status (<c>teal show</c>).</summary>
    public async Task<IReadOnlyList<CdcSlotSnapshot>> ReadAsync(CancellationToken cancellationToken)
    {
        if (Names.Count == 0)
        {
            return [];
        }

        var blue = ReadSideAsync(Side.Blue, cancellationToken);
        var green = ReadSideAsync(Side.Green, cancellationToken);
        await Task.WhenAll(blue, green);
        return [.. await blue, .. await green];
    }

    /// <summary>Polls blue until every slot's consumer confirmed <paramref name="position"/>; the switchover's timeout cancels it.</summary>
    public async Task WaitAsync(ReplicationPosition position, CancellationToken cancellationToken)
    {
        if (Names.Count == 0)
        {
            return;
        }

        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        while (true)
        {
            var behind = await blue.QueryAsync(
                "SELECT n FROM unnest($1::text[]) n LEFT JOIN pg_replication_slots s ON s.slot_name = n WHERE s.confirmed_flush_lsn IS NULL OR s.confirmed_flush_lsn < $2::pg_lsn",
                r => r.GetString(0),
                cancellationToken,
                Names.ToArray(),
                position.Value);
            if (behind.Count == 0)
            {
                return;
            }

            await Task.Delay(TimeSpan.FromMilliseconds(20), time, cancellationToken);
        }
    }

    /// <summary>
    /// On green (fenced, blue's final position applied): blue's publications that green lacks
    /// (pgoutput consumers name them), then each slot with blue's plugin. A slot of the name
    /// already on green whose consumer confirmed less than <paramref name="caughtUp"/> was made
    /// by an earlier cutover and has decoded what replication applied since: it is dropped and
    /// made again here, so its consumer never reads those changes twice.
    /// </summary>
    public async Task<IReadOnlyList<CdcSlotCreated>> CreateAsync(ReplicationPosition caughtUp, CancellationToken cancellationToken)
    {
        if (Names.Count == 0)
        {
            return [];
        }

        List<(string Name, string Plugin)> plugins;
        List<(string Name, string Statement)> publications;
        await using (var blue = await sessions.OpenAsync(Side.Blue, cancellationToken))
        {
            plugins = await blue.QueryAsync(
                "SELECT slot_name::text, plugin::text FROM pg_replication_slots WHERE slot_name = ANY($1) AND slot_type = 'logical'",
                r => (r.GetString(0), r.GetString(1)),
                cancellationToken,
                Names.ToArray());
            publications = await PublicationsToCopyAsync(blue, cancellationToken);
        }

        var missing = Names.Except(plugins.Select(p => p.Name)).ToList();
        if (missing.Count > 0)
        {
            throw new TealException("cdc.slot-missing", $"CDC slot(s) missing on blue: {string.Join(", ", missing)}", "re-create them on blue; the switchover guardrails check them too");
        }

        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var existingPublications = await green.QueryAsync("SELECT pubname::text FROM pg_publication", r => r.GetString(0), cancellationToken);
        foreach (var (_, statement) in publications.Where(p => !existingPublications.Contains(p.Name)))
        {
            await green.ExecuteAsync(statement, cancellationToken);
        }

        var failover = await green.ScalarAsync<int>("SELECT current_setting('server_version_num')::int", cancellationToken) >= 170000;
        var created = new List<CdcSlotCreated>();
        foreach (var (name, plugin) in plugins)
        {
            var existing = await green.QueryAsync(
                "SELECT confirmed_flush_lsn::text, confirmed_flush_lsn >= $2::pg_lsn, active_pid FROM pg_replication_slots WHERE slot_name = $1",
                r => (Confirmed: r.IsDBNull(0) ? null : r.GetString(0), Ours: !r.IsDBNull(1) && r.GetBoolean(1), Pid: r.IsDBNull(2) ? (int?)null : r.GetInt32(2)),
                cancellationToken,
                name,
                caughtUp.Value);
            if (existing is [{ Ours: true } ours])
            {
                created.Add(new CdcSlotCreated(name, plugin, ours.Confirmed!) { Failover = failover });
                continue;
            }

            var replaced = existing.Count > 0;
            if (existing is [{ Pid: { } pid }])
            {
                // A consumer still reads the stale slot (what it gets now are replicated changes it
                // already had from the other side): it reconnects to the new one.
                await green.ExecuteAsync("SELECT pg_terminate_backend($1)", cancellationToken, pid);
                await WaitInactiveAsync(green, name, cancellationToken);
            }

            if (replaced)
            {
                await green.ExecuteAsync("SELECT pg_drop_replication_slot($1)", cancellationToken, name);
            }

            // Its own statement: a slot cannot be created in a transaction that wrote.
            var start = failover
                ? await green.ScalarAsync<string>("SELECT lsn::text FROM pg_create_logical_replication_slot($1, $2, false, false, true)", cancellationToken, name, plugin)
                : await green.ScalarAsync<string>("SELECT lsn::text FROM pg_create_logical_replication_slot($1, $2)", cancellationToken, name, plugin);
            created.Add(new CdcSlotCreated(name, plugin, start!) { Replaced = replaced, Failover = failover });
        }

        return created;
    }

    private async Task<IEnumerable<CdcSlotSnapshot>> ReadSideAsync(Side side, CancellationToken cancellationToken)
    {
        await using var conn = await sessions.OpenAsync(side, cancellationToken);
        var found = (await conn.QueryAsync(
            """
            SELECT slot_name::text, plugin::text, active, confirmed_flush_lsn::text,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
            FROM pg_replication_slots WHERE slot_name = ANY($1)
            """,
            r => new CdcSlotSnapshot(side, r.GetString(0))
            {
                Exists = true,
                Plugin = r.IsDBNull(1) ? null : r.GetString(1),
                Active = r.GetBoolean(2),
                ConfirmedPosition = r.IsDBNull(3) ? null : r.GetString(3),
                LagBytes = r.IsDBNull(4) ? null : r.GetInt64(4),
            },
            cancellationToken,
            Names.ToArray())).ToDictionary(s => s.Name);
        return Names.Select(n => found.GetValueOrDefault(n) ?? new CdcSlotSnapshot(side, n));
    }

    /// <summary>
    /// CREATE PUBLICATION statements for blue's publications that are not Teal's (the schema copy
    /// leaves publications out): same tables (or all), same operations.
    /// </summary>
    private async Task<List<(string Name, string Statement)>> PublicationsToCopyAsync(NpgsqlConnection blue, CancellationToken cancellationToken)
    {
        var publications = await blue.QueryAsync(
            """
            SELECT p.pubname::text, p.puballtables,
                   concat_ws(', ', CASE WHEN p.pubinsert THEN 'insert' END, CASE WHEN p.pubupdate THEN 'update' END,
                             CASE WHEN p.pubdelete THEN 'delete' END, CASE WHEN p.pubtruncate THEN 'truncate' END),
                   coalesce((SELECT array_agg(format('%I.%I', t.schemaname, t.tablename) ORDER BY 1) FROM pg_publication_tables t WHERE t.pubname = p.pubname), '{}')
            FROM pg_publication p
            WHERE p.pubname <> $1 AND p.pubname NOT LIKE 'teal\_%'
            """,
            r => (Name: r.GetString(0), All: r.GetBoolean(1), Publish: r.GetString(2), Tables: r.GetFieldValue<string[]>(3)),
            cancellationToken,
            sessions.Spec.Name);
        return [.. publications
            .Where(p => p.All || p.Tables.Length > 0)
            .Select(p => (p.Name, $"CREATE PUBLICATION {Sql.Ident(p.Name)} {(p.All ? "FOR ALL TABLES" : "FOR TABLE " + string.Join(", ", p.Tables))} WITH (publish = {Sql.Literal(p.Publish)})"))];
    }

    private async Task WaitInactiveAsync(NpgsqlConnection green, string name, CancellationToken cancellationToken)
    {
        while (await green.ScalarAsync<bool>("SELECT coalesce((SELECT active FROM pg_replication_slots WHERE slot_name = $1), false)", cancellationToken, name))
        {
            await Task.Delay(TimeSpan.FromMilliseconds(10), time, cancellationToken);
        }
    }
}
