using Teal.Core.Engines;

namespace Teal.Postgres.Replication;

/// <summary>
/// The readers' streams as their writer sees them. Matched by slot, not by application name:
/// the slot is fixed when the reader is made, while the reader's instance name changes at the
/// switchover.
/// </summary>
internal static class ReaderStreams
{
    public static async Task<IReadOnlyList<ReaderReplication>> ReadAsync(LinkSessions sessions, Side side, IReadOnlyList<string> slots, CancellationToken cancellationToken)
    {
        if (slots.Count == 0)
        {
            return [];
        }

        await using var conn = await sessions.OpenAsync(side, cancellationToken);
        var found = await conn.QueryAsync(
            """
            SELECT s.slot_name, r.state,
                   pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(r.replay_lsn, s.restart_lsn))::bigint,
                   extract(epoch FROM r.replay_lag)::float8
            FROM pg_replication_slots s
            LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
            WHERE s.slot_type = 'physical' AND s.slot_name = ANY($1)
            """,
            r => new ReaderReplication(r.GetString(0), r.IsDBNull(1) ? null : r.GetString(1), r.IsDBNull(2) ? null : r.GetInt64(2))
            {
                LagSeconds = r.IsDBNull(3) ? null : r.GetDouble(3),
            },
            cancellationToken,
            slots.ToArray());
        // A slot that is gone is reported as not connected: the guardrail names it.
        return [.. slots.Select(slot => found.FirstOrDefault(f => f.Slot == slot) ?? new ReaderReplication(slot, null, null))];
    }
}
