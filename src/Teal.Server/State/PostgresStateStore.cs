using System.Globalization;
using System.Text.Json;
using Npgsql;
using NpgsqlTypes;
using Teal.Core.Deployments;
using Teal.Core.Endpoints;
using Teal.Core.Engines;
using Teal.Core.Events;
using Teal.Core.Instances;
using Teal.Core.State;
using Teal.Postgres.Connections;
using Teal.Server.Json;

namespace Teal.Server.State;

/// <summary>
/// Teal's state in a PostgreSQL database (<c>teal serve --state postgresql://…</c>), so that
/// more than one control-plane machine can share it: the same records, migrations and
/// guarantees as <see cref="SqliteStateStore"/>. A write is committed with
/// <c>synchronous_commit</c> on when the call returns (off for a change marked not durable: it
/// survives a crash of Teal, not of the database server); a deployment's read-modify-write reads
/// the row <c>FOR UPDATE</c>; event appends are serialized so that sequence order is commit
/// order. Who may write is the <see cref="Fence"/>: the leader's writes prove it holds the lock.
/// </summary>
public sealed class PostgresStateStore : IStateStore, IDisposable
{
    private readonly NpgsqlDataSource _data;
    private readonly NpgsqlConnectionStringBuilder _settings;
    private readonly TimeProvider _time;
    private readonly EventSignal _signal;
    private WriteFence _fence = WriteFence.Unfenced;

    /// <summary>Opens (and migrates) the store at <paramref name="location"/>; <paramref name="password"/> when the location holds none.</summary>
    public PostgresStateStore(string location, string? password, TimeProvider time, EventSignal signal)
    {
        Connection = ConnectionStrings.Parse(location).WithPassword(password);
        _time = time;
        _signal = signal;
        _settings = PostgresConnections.Builder(Connection);
        _settings.SearchPath = PostgresStateSchema.Schema;
        _settings.ApplicationName = "teal-state";
        _data = NpgsqlDataSource.Create(_settings.ConnectionString);
        try
        {
            using var connection = _data.OpenConnection();
            PostgresStateSchema.Migrate(connection, Connection.ToString());
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
        {
            _data.Dispose();
            throw PostgresConnections.Classify(ex, Connection, "the state store");
        }
    }

    /// <summary>Where the state is (its password masked when printed).</summary>
    public ConnectionInfo Connection { get; }

    internal NpgsqlDataSource DataSource => _data;

    /// <summary>Who may write from this process; set by leader election.</summary>
    public WriteFence Fence
    {
        get => Volatile.Read(ref _fence);
        set => Volatile.Write(ref _fence, value);
    }

    /// <summary>A connection of its own, outside the pool (the leader lock is held for a session's whole life).</summary>
    internal NpgsqlConnection NewSessionConnection(string applicationName) =>
        new(new NpgsqlConnectionStringBuilder(_settings.ConnectionString)
        {
            Pooling = false,
            ApplicationName = applicationName,
            // A dead peer must end the session on this side too. No driver keepalive query: the
            // leader's own check is one, and a second one on the same session would race with it.
            TcpKeepAlive = true,
        }.ConnectionString);

    public void Dispose() => _data.Dispose();

    // ---- instances -------------------------------------------------------------------------

    public Task<Instance?> GetInstanceAsync(string name, CancellationToken cancellationToken) =>
        ReadOneAsync<Instance>("SELECT data FROM instances WHERE name = $1", name, cancellationToken);

    public Task<IReadOnlyList<Instance>> ListInstancesAsync(CancellationToken cancellationToken) =>
        ReadAllAsync<Instance>("SELECT data FROM instances ORDER BY name", cancellationToken);

    public Task AddInstanceAsync(Instance instance, CancellationToken cancellationToken) =>
        WriteAsync((c, ct) => InsertInstanceAsync(c, instance, ct), cancellationToken);

    public Task UpdateInstanceAsync(Instance instance, CancellationToken cancellationToken) =>
        WriteAsync(
            async (c, ct) => StateErrors.RequireChanged(await ExecuteAsync(c, "UPDATE instances SET data = $2 WHERE name = $1", ct, instance.Name, JsonValue(instance)), "instance", instance.Name),
            cancellationToken);

    public Task RemoveInstanceAsync(string name, CancellationToken cancellationToken) =>
        WriteAsync((c, ct) => ExecuteAsync(c, "DELETE FROM instances WHERE name = $1", ct, name), cancellationToken);

    // ---- deployments -----------------------------------------------------------------------

    public Task<Deployment?> GetDeploymentAsync(DeploymentId id, CancellationToken cancellationToken) =>
        ReadOneAsync<Deployment>("SELECT data FROM deployments WHERE id = $1", id.Value, cancellationToken);

    public Task<Deployment?> FindDeploymentAsync(string name, CancellationToken cancellationToken) =>
        ReadOneAsync<Deployment>("SELECT data FROM deployments WHERE name = $1", name, cancellationToken);

    public Task<IReadOnlyList<Deployment>> ListDeploymentsAsync(CancellationToken cancellationToken) =>
        ReadAllAsync<Deployment>("SELECT data FROM deployments ORDER BY name", cancellationToken);

    public Task AddDeploymentAsync(Deployment deployment, CancellationToken cancellationToken) =>
        WriteAsync(
            (c, ct) => InsertAsync(c, "INSERT INTO deployments (id, name, data) VALUES ($1, $2, $3)", "deployment", deployment.Name, ct, deployment.Id.Value, deployment.Name, JsonValue(deployment)),
            cancellationToken);

    public async Task<Deployment> UpdateDeploymentAsync(DeploymentId id, Func<Deployment, Deployment> change, CancellationToken cancellationToken)
    {
        var update = new DeploymentChange(id, change);
        await WriteAsync((c, ct) => ApplyChangeAsync(c, update, ct), cancellationToken);
        return update.Result!; // ApplyChangeAsync sets it or throws.
    }

    public Task RemoveDeploymentAsync(DeploymentId id, CancellationToken cancellationToken) =>
        WriteAsync((c, ct) => ExecuteAsync(c, "DELETE FROM deployments WHERE id = $1", ct, id.Value), cancellationToken);

    // ---- endpoints -------------------------------------------------------------------------

    public Task<EndpointSpec?> GetEndpointAsync(string name, CancellationToken cancellationToken) =>
        ReadOneAsync<EndpointSpec>("SELECT data FROM endpoints WHERE name = $1", name, cancellationToken);

    public Task<IReadOnlyList<EndpointSpec>> ListEndpointsAsync(CancellationToken cancellationToken) =>
        ReadAllAsync<EndpointSpec>("SELECT data FROM endpoints ORDER BY name", cancellationToken);

    public Task AddEndpointAsync(EndpointSpec endpoint, CancellationToken cancellationToken) =>
        WriteAsync(
            (c, ct) => InsertAsync(c, "INSERT INTO endpoints (name, instance, data) VALUES ($1, $2, $3)", "endpoint", endpoint.Name, ct, endpoint.Name, endpoint.Instance, JsonValue(endpoint)),
            cancellationToken);

    public Task UpdateEndpointAsync(EndpointSpec endpoint, CancellationToken cancellationToken) =>
        WriteAsync(async (c, ct) => StateErrors.RequireChanged(await UpsertEndpointAsync(c, endpoint, insert: false, ct), "endpoint", endpoint.Name), cancellationToken);

    public Task RemoveEndpointAsync(string name, CancellationToken cancellationToken) =>
        WriteAsync((c, ct) => ExecuteAsync(c, "DELETE FROM endpoints WHERE name = $1", ct, name), cancellationToken);

    // ---- events ----------------------------------------------------------------------------

    public async Task<DeploymentEvent> AppendEventAsync(DeploymentId? deploymentId, string kind, string message, IReadOnlyDictionary<string, string>? data, CancellationToken cancellationToken)
    {
        var time = _time.GetUtcNow();
        var payload = data ?? new Dictionary<string, string>();
        long seq = 0;
        await WriteAsync(
            async (c, ct) =>
            {
                await LockEventOrderAsync(c, ct);
                seq = await InsertEventAsync(c, time, new NewEvent(deploymentId, kind, message, payload), ct);
            },
            cancellationToken);
        _signal.Pulse();
        return new DeploymentEvent(seq, time, deploymentId, kind, message) { Data = payload };
    }

    /// <summary>
    /// Held by every transaction that inserts events, until it ends: a sequence hands out numbers
    /// at insert, not at commit, so without it a reader following "after seq N" could pass an
    /// event that commits after a later one.
    /// </summary>
    private static Task<int> LockEventOrderAsync(NpgsqlConnection c, CancellationToken ct) =>
        ExecuteAsync(c, $"SELECT pg_advisory_xact_lock({PostgresStateSchema.LockClass}, {PostgresStateSchema.EventOrder})", ct);

    /// <summary>Inserts one event; the transaction holds <see cref="LockEventOrderAsync"/> already.</summary>
    private static async Task<long> InsertEventAsync(NpgsqlConnection c, DateTimeOffset time, NewEvent e, CancellationToken ct)
    {
        await using var command = Command(
            c,
            "INSERT INTO events (time, deployment_id, kind, message, data) VALUES ($1, $2, $3, $4, $5) RETURNING seq",
            time.ToString("O", CultureInfo.InvariantCulture),
            e.DeploymentId?.Value,
            e.Kind,
            e.Message,
            JsonValue(e.Data));
        return (long)(await command.ExecuteScalarAsync(ct))!; // RETURNING seq is never NULL.
    }

    public async Task<IReadOnlyList<DeploymentEvent>> ListEventsAsync(DeploymentId? deploymentId, long afterSeq, int limit, CancellationToken cancellationToken)
    {
        await using var connection = await OpenAsync(cancellationToken);
        await using var command = deploymentId is null
            ? Command(connection, "SELECT seq, time, deployment_id, kind, message, data FROM events WHERE seq > $1 ORDER BY seq LIMIT $2", afterSeq, (long)limit)
            : Command(connection, "SELECT seq, time, deployment_id, kind, message, data FROM events WHERE seq > $1 AND deployment_id = $3 ORDER BY seq LIMIT $2", afterSeq, (long)limit, deploymentId.Value.Value);
        return await StateRows.ReadEventsAsync(command, Where, cancellationToken);
    }

    /// <summary>The newest event's sequence number (0 when none): a standby wakes its event followers when it grows.</summary>
    public async Task<long> LastEventSeqAsync(CancellationToken cancellationToken)
    {
        await using var connection = await OpenAsync(cancellationToken);
        await using var command = Command(connection, "SELECT coalesce(max(seq), 0) FROM events");
        return (long)(await command.ExecuteScalarAsync(cancellationToken))!;
    }

    // ---- leader ----------------------------------------------------------------------------

    /// <summary>Records this process as the leader (a guarded write: only the lock holder can).</summary>
    internal Task RecordLeaderAsync(string url, string host, int lockBackend, CancellationToken cancellationToken) =>
        WriteAsync(
            (c, ct) => ExecuteAsync(
                c,
                "INSERT INTO leader (id, url, host, pid, since) VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET url = excluded.url, host = excluded.host, pid = excluded.pid, since = excluded.since",
                ct,
                url,
                host,
                lockBackend,
                _time.GetUtcNow().ToString("O", CultureInfo.InvariantCulture)),
            cancellationToken);

    /// <summary>The recorded leader's URL while its lock session still holds the lock; null when nobody leads.</summary>
    internal static async Task<string?> ReadLeaderUrlAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        await using var command = Command(
            connection,
            $"""
            SELECT l.url FROM leader l
            WHERE EXISTS (
                SELECT 1 FROM pg_locks
                WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND classid = {PostgresStateSchema.LockClass} AND objid = {PostgresStateSchema.LeaderLock} AND objsubid = 2 AND granted AND pid = l.pid)
            """);
        return await command.ExecuteScalarAsync(cancellationToken) as string;
    }

    // ---- journal ---------------------------------------------------------------------------

    public Task AppendJournalAsync(JournalEntry entry, CancellationToken cancellationToken) =>
        WriteAsync((c, ct) => InsertJournalAsync(c, entry, ct), cancellationToken);

    public async Task<IReadOnlyList<JournalEntry>> ReadJournalAsync(DeploymentId deploymentId, CancellationToken cancellationToken)
    {
        await using var connection = await OpenAsync(cancellationToken);
        await using var command = Command(connection, "SELECT seq, data FROM journal WHERE deployment_id = $1 ORDER BY seq", deploymentId.Value);
        return await StateRows.ReadJournalAsync(command, Where, cancellationToken);
    }

    // ---- several changes at once -----------------------------------------------------------

    public async Task ApplyAsync(StateChange change, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(change);
        await WriteAsync(
            async (c, ct) =>
            {
                // Every old name goes before any new one is taken: at switchover green takes
                // blue's name in the same change that renames blue, in whatever order listed.
                foreach (var (oldName, _) in change.RenamedInstances)
                {
                    StateErrors.RequireChanged(await ExecuteAsync(c, "DELETE FROM instances WHERE name = $1", ct, oldName), "instance", oldName);
                }

                foreach (var (_, instance) in change.RenamedInstances)
                {
                    await InsertInstanceAsync(c, instance, ct);
                }

                foreach (var deployment in change.Deployments)
                {
                    await ApplyChangeAsync(c, deployment, ct);
                }

                foreach (var endpoint in change.Endpoints)
                {
                    await UpsertEndpointAsync(c, endpoint, insert: true, ct);
                }

                foreach (var entry in change.Journal)
                {
                    await InsertJournalAsync(c, entry, ct);
                }

                if (change.Events.Count > 0)
                {
                    await LockEventOrderAsync(c, ct);
                }

                var time = _time.GetUtcNow();
                foreach (var e in change.Events)
                {
                    await InsertEventAsync(c, time, e, ct);
                }
            },
            cancellationToken,
            change.Durable);
        if (change.Events.Count > 0)
        {
            _signal.Pulse();
        }
    }

    // ---- plumbing --------------------------------------------------------------------------

    private async Task<NpgsqlConnection> OpenAsync(CancellationToken cancellationToken)
    {
        try
        {
            return await _data.OpenConnectionAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
        {
            throw PostgresConnections.Classify(ex, Connection, "the state store");
        }
    }

    /// <summary>
    /// One write transaction: refused on a standby; on the leader, the guard runs first (it
    /// fails once the leader lock is lost); not durable means <c>synchronous_commit = off</c>.
    /// </summary>
    private async Task WriteAsync(Func<NpgsqlConnection, CancellationToken, Task> write, CancellationToken cancellationToken, bool durable = true)
    {
        var fence = Fence;
        fence.ThrowIfStandby();
        await using var connection = await OpenAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        try
        {
            if (!durable)
            {
                await ExecuteAsync(connection, "SET LOCAL synchronous_commit = off", cancellationToken);
            }

            if (fence.LeaderBackend is { } backend)
            {
                await ExecuteAsync(connection, "SELECT leader_guard($1)", cancellationToken, backend);
            }

            await write(connection, cancellationToken);
            await transaction.CommitAsync(cancellationToken);
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresStateSchema.NotLeaderState)
        {
            throw WriteFence.NotLeader(null, ex);
        }
    }

    private async Task<T?> ReadOneAsync<T>(string sql, string key, CancellationToken cancellationToken)
        where T : class
    {
        await using var connection = await OpenAsync(cancellationToken);
        await using var command = Command(connection, sql, key);
        return await command.ExecuteScalarAsync(cancellationToken) is string json ? FromJson<T>(json) : null;
    }

    private async Task<IReadOnlyList<T>> ReadAllAsync<T>(string sql, CancellationToken cancellationToken)
    {
        await using var connection = await OpenAsync(cancellationToken);
        await using var command = Command(connection, sql);
        return await StateRows.ReadJsonAsync<T>(command, Where, cancellationToken);
    }

    private static Task InsertInstanceAsync(NpgsqlConnection connection, Instance instance, CancellationToken cancellationToken) =>
        InsertAsync(connection, "INSERT INTO instances (name, data) VALUES ($1, $2)", "instance", instance.Name, cancellationToken, instance.Name, JsonValue(instance));

    /// <summary>Reads the stored deployment locked for this transaction, applies the change, writes it back.</summary>
    private static async Task ApplyChangeAsync(NpgsqlConnection connection, DeploymentChange change, CancellationToken cancellationToken)
    {
        string? json;
        await using (var read = Command(connection, "SELECT data FROM deployments WHERE id = $1 FOR UPDATE", change.Id.Value))
        {
            json = await read.ExecuteScalarAsync(cancellationToken) as string;
        }

        if (json is null)
        {
            StateErrors.RequireChanged(0, "deployment", change.Id.Value);
            return;
        }

        var stored = FromJson<Deployment>(json);
        var next = change.Apply(stored);
        if (!ReferenceEquals(next, stored))
        {
            StateErrors.RequireChanged(
                await ExecuteAsync(connection, "UPDATE deployments SET name = $2, data = $3 WHERE id = $1", cancellationToken, next.Id.Value, next.Name, JsonValue(next)),
                "deployment",
                change.Id.Value);
        }
    }

    private static Task<int> UpsertEndpointAsync(NpgsqlConnection connection, EndpointSpec endpoint, bool insert, CancellationToken cancellationToken) =>
        ExecuteAsync(
            connection,
            insert
                ? "INSERT INTO endpoints (name, instance, data) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET instance = excluded.instance, data = excluded.data"
                : "UPDATE endpoints SET instance = $2, data = $3 WHERE name = $1",
            cancellationToken,
            endpoint.Name,
            endpoint.Instance,
            JsonValue(endpoint));

    private static Task<int> InsertJournalAsync(NpgsqlConnection connection, JournalEntry entry, CancellationToken cancellationToken) =>
        ExecuteAsync(connection, "INSERT INTO journal (deployment_id, data) VALUES ($1, $2)", cancellationToken, entry.DeploymentId.Value, JsonValue(entry));

    private static async Task InsertAsync(NpgsqlConnection connection, string sql, string what, string name, CancellationToken cancellationToken, params object?[] values)
    {
        try
        {
            await ExecuteAsync(connection, sql, cancellationToken, values);
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.UniqueViolation)
        {
            throw StateErrors.DuplicateName(what, name, ex);
        }
    }

    private static async Task<int> ExecuteAsync(NpgsqlConnection connection, string sql, CancellationToken cancellationToken, params object?[] values)
    {
        await using var command = Command(connection, sql, values);
        return await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <summary>A command with positional parameters; a <see cref="NpgsqlParameter"/> passes as given (JSON), null as NULL text.</summary>
    private static NpgsqlCommand Command(NpgsqlConnection connection, string sql, params object?[] values)
    {
        var command = new NpgsqlCommand(sql, connection);
        foreach (var value in values)
        {
            command.Parameters.Add(value switch
            {
                NpgsqlParameter parameter => parameter,
                null => new NpgsqlParameter { Value = DBNull.Value, NpgsqlDbType = NpgsqlDbType.Text },
                _ => new NpgsqlParameter { Value = value },
            });
        }

        return command;
    }

    private static NpgsqlParameter JsonValue<T>(T value) =>
        new() { Value = JsonSerializer.Serialize(value, TealJson.Options), NpgsqlDbType = NpgsqlDbType.Json };

    /// <summary>How errors name this store.</summary>
    private const string Where = "the state database";

    private static T FromJson<T>(string json) => StateRows.FromJson<T>(json, Where);
}
