using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Postgres.Connections;

namespace Teal.Postgres.Replication;

/// <summary>
/// Replication back from green to blue after a cutover (ARCHITECTURE.md, "Switchback"). The
/// objects have the deployment's name, like the forward ones, on the other servers: publication
/// and slot on green, subscription on blue. So the reversed link (green as its blue) finds them
/// where a forward link finds its own, and a switchback is the same plan over it.
/// </summary>
internal sealed class ReverseReplication(LinkSessions sessions, Fencing fencing, ReplicationSetup setup)
{
    private string Name => sessions.Spec.Name;

    /// <summary>
    /// Publication and slot on green, made while green is fenced, before the write pause: the
    /// slot's start lies before any client write on green, and before some of what green still
    /// applies from blue, which <see cref="StartAsync"/> skips. A slot already there is kept with
    /// its start (left by a switchover that rolled back while green was unreachable, or made by
    /// open-green before a crash): nothing consumed it yet, and the skip reads past what it holds.
    /// </summary>
    public async Task<ReplicationPosition> PrepareAsync(CancellationToken cancellationToken)
    {
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        // Teal's role on green is a superuser (green is fenced from the start), so FOR ALL TABLES.
        await setup.CreatePublicationAsync(green, superuser: true, cancellationToken);
        var existing = await green.ScalarAsync<string>("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", cancellationToken, Name);
        if (existing is not null)
        {
            return new ReplicationPosition(existing);
        }

        try
        {
            // Its own statement (and transaction): a slot cannot be created after writes in one.
            var lsn = await green.ScalarAsync<string>("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", cancellationToken, Name);
            return new ReplicationPosition(lsn!);
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.ConfigurationLimitExceeded or PostgresErrorCodes.ObjectNotInPrerequisiteState)
        {
            throw new TealException(
                "reverse.slot-failed",
                $"green cannot keep a replication slot for the old blue: {ex.MessageText}",
                "on green raise max_replication_slots (and set wal_level = logical), restart it, then resume; or create deployments with --no-reverse-replication");
        }
    }

    /// <summary>
    /// A switchover that rolls back before green opened takes the prepared objects away again:
    /// the slot would hold green's WAL for as long as the deployment lives.
    /// </summary>
    public async Task DropPreparedAsync(CancellationToken cancellationToken)
    {
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        await setup.DropSlotAsync(green, cancellationToken);
        await green.ExecuteAsync($"DROP PUBLICATION IF EXISTS {Sql.Ident(Name)}", cancellationToken);
    }

    /// <summary>
    /// Blue subscribes to green from the prepared slot, copying nothing, and applies what green
    /// committed from <paramref name="from"/> on (green's position once it had applied blue's
    /// final one). Blue's fence stays: only its holder changes to the one the reversed link
    /// releases at switchback. The subscription is Teal's login's, so blue's apply worker runs
    /// as a role that keeps LOGIN; it writes through the fence's read-only default because the
    /// apply worker does not go through the executor's read-only check.
    /// </summary>
    public async Task StartAsync(ReplicationPosition from, CancellationToken cancellationToken)
    {
        await fencing.HandOverAsync(Side.Blue, cancellationToken);
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        await TealObjects.InstallTablesAsync(blue, cancellationToken);
        if (await setup.SubscriptionExistsAsync(blue, cancellationToken))
        {
            return;
        }

        await SkipToAsync(from, cancellationToken);

        // origin = none (PostgreSQL 16+): blue applies only what clients wrote on green, never a
        // change green itself applied from elsewhere. Older subscribers do not know the option;
        // forward replication is dropped before this runs, so no change can loop back either way.
        var version = await blue.ScalarAsync<int>("SELECT current_setting('server_version_num')::int", cancellationToken);
        var origin = version >= 160000 ? ", origin = none" : string.Empty;
        await blue.ExecuteAsync("SET log_statement = 'none'; SET log_min_error_statement = 'panic'", cancellationToken);
        try
        {
            await blue.ExecuteAsync(
                $"CREATE SUBSCRIPTION {Sql.Ident(Name)} CONNECTION {Sql.Literal(Libpq.Conninfo(GreenConninfo()))} PUBLICATION {Sql.Ident(Name)} WITH (create_slot = false, slot_name = {Sql.Literal(Name)}, copy_data = false{origin})",
                cancellationToken);
        }
        catch (PostgresException ex)
        {
            // Npgsql keeps the statement (with green's password) on the exception: rethrow without it.
            throw new TealException(
                "reverse.subscription-failed",
                $"subscribing the old blue to green failed: {ex.MessageText} ({ex.SqlState})",
                "the old blue must reach green at the address Teal uses for green, and green's pg_hba.conf must allow replication connections from it");
        }
        finally
        {
            await blue.ExecuteAsync("RESET log_statement; RESET log_min_error_statement", cancellationToken);
        }
    }

    /// <summary>
    /// The slot was made before the pause, while green still applied blue's writes: moved on to
    /// <paramref name="from"/>, it skips every transaction committed before it — those blue
    /// wrote itself — and keeps every client write on green. A PostgreSQL 15 subscriber has no
    /// <c>origin = none</c> to filter them, and each would be applied twice on blue (a duplicate
    /// key stops its apply worker). Moving the slot needs only green's replication privilege; a
    /// slot already past <paramref name="from"/> (a recovery repeating the step) is left alone.
    /// </summary>
    private async Task SkipToAsync(ReplicationPosition from, CancellationToken cancellationToken)
    {
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        await green.ExecuteAsync(
            "SELECT pg_replication_slot_advance(slot_name, $2::pg_lsn) FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn < $2::pg_lsn",
            cancellationToken,
            Name,
            from.Value);
    }

    /// <summary>
    /// <c>teal finish</c> on the reversed link (its green is the old blue): the subscription,
    /// the publication, the slot and Teal's tables and triggers leave both sides; the old blue
    /// keeps its fence, and production keeps nothing of Teal's.
    /// </summary>
    public async Task FinishAsync(CancellationToken cancellationToken)
    {
        await using (var green = await sessions.OpenAsync(Side.Green, cancellationToken))
        {
            await setup.DropSubscriptionAsync(green, blueReachable: true, cancellationToken);
        }

        await using (var blue = await sessions.OpenAsync(Side.Blue, cancellationToken))
        {
            await blue.ExecuteAsync($"DROP PUBLICATION IF EXISTS {Sql.Ident(Name)}", cancellationToken);
            await setup.DropSlotAsync(blue, cancellationToken);
            await TealObjects.RemoveAsync(blue, Name, cancellationToken);
            await Fencing.DropRecordIfUnusedAsync(blue, cancellationToken);
        }

        await using (var green = await sessions.OpenAsync(Side.Green, cancellationToken))
        {
            await TealObjects.RemoveAsync(green, Name, cancellationToken);
        }
    }

    private IEnumerable<KeyValuePair<string, string?>> GreenConninfo()
    {
        // Teal's own role: green's walsender must log in whatever green's fence says later.
        var green = sessions.Connection(Side.Green);
        yield return new("host", green.Host);
        yield return new("port", green.Port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        yield return new("user", green.User);
        yield return new("password", green.Password);
        yield return new("dbname", green.Database);
        if (green.Options.TryGetValue("SSL Mode", out var ssl))
        {
            yield return new("sslmode", ssl.ToLowerInvariant() switch { "verifyfull" => "verify-full", "verifyca" => "verify-ca", var s => s });
        }
    }
}
