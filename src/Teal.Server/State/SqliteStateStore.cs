using System.Globalization;
using System.Text.Json;
using Microsoft.Data.Sqlite;
using Teal.Core.Deployments;
using Teal.Core.Endpoints;
using Teal.Core.Events;
using Teal.Core.Instances;
using Teal.Core.State;
using Teal.Server.Json;

namespace Teal.Server.State;

/// <summary>
/// Teal's state in one SQLite file (<c>teal.db</c> under the data directory). WAL with
/// <c>synchronous=FULL</c>: a write is on disk when the call returns, which the switchover
/// journal relies on. Records are stored as JSON beside the columns that lookups and
/// uniqueness need, so a new field in a record needs no migration.
/// </summary>
public sealed class SqliteStateStore : IStateStore, IDisposable
{
    public const string FileName = "teal.db";

    private const int SqliteConstraint = 19;

    private readonly string _connectionString;
    private readonly TimeProvider _time;
    private readonly EventSignal _signal;

    // SQLite takes one writer at a time anyway; queueing writers here instead of in SQLite's
    // busy handler keeps the order fair and the errors out of the way.
    private readonly SemaphoreSlim _writeLock = new(1, 1);

    /// <summary>The server's store: opened only by the process holding the data directory's lock, so no second one writes.</summary>
    public SqliteStateStore(Hosting.DataDirectoryLock held, TimeProvider time, EventSignal signal)
        : this(held?.Directory ?? throw new ArgumentNullException(nameof(held)), time, signal)
    {
    }

    public SqliteStateStore(string dataDirectory, TimeProvider time, EventSignal signal)
    {
        Path = System.IO.Path.Combine(dataDirectory, FileName);
        _time = time;
        _signal = signal;
        _connectionString = new SqliteConnectionStringBuilder { DataSource = Path, Pooling = true }.ToString();
        CreatePrivate(Path);
        using var connection = Open();
        using (var wal = connection.CreateCommand())
        {
            // Persistent in the file: set once, kept by every later connection.
            wal.CommandText = "PRAGMA journal_mode=WAL";
            wal.ExecuteNonQuery();
        }

        StateSchema.Migrate(connection, Path);
    }

    public string Path { get; }

    /// <summary>
    /// The state holds no password, but it is the map of every database Teal reaches: owner
    /// only. SQLite creates its -wal and -shm files with the database file's mode, so creating
    /// that one 0600 (an empty file is a new database to SQLite) covers all three.
    /// </summary>
    private static void CreatePrivate(string path)
    {
        if (File.Exists(path))
        {
            foreach (var file in new[] { path, path + "-wal", path + "-shm" })
            {
                Core.Secrets.PrivateFile.Narrow(file);
            }

            return;
        }

        using (new FileStream(path, new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, UnixCreateMode = Core.Secrets.PrivateFile.OwnerOnly }))
        {
            // Created empty with its mode; SQLite fills it.
        }
    }

    /// <summary>Closes the pooled connections, so the file is not held after Teal stops.</summary>
    public void Dispose()
    {
        using var connection = new SqliteConnection(_connectionString);
        SqliteConnection.ClearPool(connection);
        _writeLock.Dispose();
    }

    // ---- instances -------------------------------------------------------------------------

    public Task<Instance?> GetInstanceAsync(string name, CancellationToken cancellationToken) =>
        ReadOneAsync<Instance>("SELECT data FROM instances WHERE name = $key", name, cancellationToken);

    public Task<IReadOnlyList<Instance>> ListInstancesAsync(CancellationToken cancellationToken) =>
        ReadAllAsync<Instance>("SELECT data FROM instances ORDER BY name", cancellationToken);

    public Task AddInstanceAsync(Instance instance, CancellationToken cancellationToken) =>
        WriteAsync(c => InsertInstance(c, instance), cancellationToken);

    public Task UpdateInstanceAsync(Instance instance, CancellationToken cancellationToken) =>
        WriteAsync(c => RequireChanged(Execute(c, "UPDATE instances SET data = $data WHERE name = $name", ("$name", instance.Name), ("$data", Json(instance))), "instance", instance.Name), cancellationToken);

    public Task RemoveInstanceAsync(string name, CancellationToken cancellationToken) =>
        WriteAsync(c => Execute(c, "DELETE FROM instances WHERE name = $name", ("$name", name)), cancellationToken);

    // ---- deployments -----------------------------------------------------------------------

    public Task<Deployment?> GetDeploymentAsync(DeploymentId id, CancellationToken cancellationToken) =>
        ReadOneAsync<Deployment>("SELECT data FROM deployments WHERE id = $key", id.Value, cancellationToken);

    public Task<Deployment?> FindDeploymentAsync(string name, CancellationToken cancellationToken) =>
        ReadOneAsync<Deployment>("SELECT data FROM deployments WHERE name = $key", name, cancellationToken);

    public Task<IReadOnlyList<Deployment>> ListDeploymentsAsync(CancellationToken cancellationToken) =>
        ReadAllAsync<Deployment>("SELECT data FROM deployments ORDER BY name", cancellationToken);

    public Task AddDeploymentAsync(Deployment deployment, CancellationToken cancellationToken) =>
        WriteAsync(
            c => Insert(c, "INSERT INTO deployments (id, name, data) VALUES ($id, $name, $data)", "deployment", deployment.Name, ("$id", deployment.Id.Value), ("$name", deployment.Name), ("$data", Json(deployment))),
            cancellationToken);

    public async Task<Deployment> UpdateDeploymentAsync(DeploymentId id, Func<Deployment, Deployment> change, CancellationToken cancellationToken)
    {
        var update = new DeploymentChange(id, change);
        await WriteAsync(c => ApplyChange(c, update), cancellationToken);
        return update.Result!; // ApplyChange sets it or throws.
    }

    public Task RemoveDeploymentAsync(DeploymentId id, CancellationToken cancellationToken) =>
        WriteAsync(c => Execute(c, "DELETE FROM deployments WHERE id = $id", ("$id", id.Value)), cancellationToken);

    // ---- endpoints -------------------------------------------------------------------------

    public Task<EndpointSpec?> GetEndpointAsync(string name, CancellationToken cancellationToken) =>
        ReadOneAsync<EndpointSpec>("SELECT data FROM endpoints WHERE name = $key", name, cancellationToken);

    public Task<IReadOnlyList<EndpointSpec>> ListEndpointsAsync(CancellationToken cancellationToken) =>
        ReadAllAsync<EndpointSpec>("SELECT data FROM endpoints ORDER BY name", cancellationToken);

    public Task AddEndpointAsync(EndpointSpec endpoint, CancellationToken cancellationToken) =>
        WriteAsync(
            c => Insert(c, "INSERT INTO endpoints (name, instance, data) VALUES ($name, $instance, $data)", "endpoint", endpoint.Name, ("$name", endpoint.Name), ("$instance", endpoint.Instance), ("$data", Json(endpoint))),
            cancellationToken);

    public Task UpdateEndpointAsync(EndpointSpec endpoint, CancellationToken cancellationToken) =>
        WriteAsync(c => RequireChanged(UpsertEndpoint(c, endpoint, insert: false), "endpoint", endpoint.Name), cancellationToken);

    public Task RemoveEndpointAsync(string name, CancellationToken cancellationToken) =>
        WriteAsync(c => Execute(c, "DELETE FROM endpoints WHERE name = $name", ("$name", name)), cancellationToken);

    // ---- events ----------------------------------------------------------------------------

    public async Task<DeploymentEvent> AppendEventAsync(DeploymentId? deploymentId, string kind, string message, IReadOnlyDictionary<string, string>? data, CancellationToken cancellationToken)
    {
        var time = _time.GetUtcNow();
        var payload = data ?? new Dictionary<string, string>();
        long seq = 0;
        await WriteAsync(c => seq = InsertEvent(c, time, new NewEvent(deploymentId, kind, message, payload)), cancellationToken);
        _signal.Pulse();
        return new DeploymentEvent(seq, time, deploymentId, kind, message) { Data = payload };
    }

    private static long InsertEvent(SqliteConnection c, DateTimeOffset time, NewEvent e)
    {
        Execute(
            c,
            "INSERT INTO events (time, deployment_id, kind, message, data) VALUES ($time, $deployment, $kind, $message, $data)",
            ("$time", time.ToString("O", CultureInfo.InvariantCulture)),
            ("$deployment", e.DeploymentId?.Value),
            ("$kind", e.Kind),
            ("$message", e.Message),
            ("$data", Json(e.Data)));
        return LastRowId(c);
    }

    public async Task<IReadOnlyList<DeploymentEvent>> ListEventsAsync(DeploymentId? deploymentId, long afterSeq, int limit, CancellationToken cancellationToken)
    {
        await using var connection = Open();
        await using var command = connection.CreateCommand();
        command.CommandText = deploymentId is null
            ? "SELECT seq, time, deployment_id, kind, message, data FROM events WHERE seq > $after ORDER BY seq LIMIT $limit"
            : "SELECT seq, time, deployment_id, kind, message, data FROM events WHERE seq > $after AND deployment_id = $deployment ORDER BY seq LIMIT $limit";
        command.Parameters.AddWithValue("$after", afterSeq);
        command.Parameters.AddWithValue("$limit", limit);
        command.Parameters.AddWithValue("$deployment", (object?)deploymentId?.Value ?? DBNull.Value);
        return await StateRows.ReadEventsAsync(command, Where, cancellationToken);
    }

    // ---- journal ---------------------------------------------------------------------------

    public Task AppendJournalAsync(JournalEntry entry, CancellationToken cancellationToken) =>
        WriteAsync(c => InsertJournal(c, entry), cancellationToken);

    public async Task<IReadOnlyList<JournalEntry>> ReadJournalAsync(DeploymentId deploymentId, CancellationToken cancellationToken)
    {
        await using var connection = Open();
        await using var command = connection.CreateCommand();
        command.CommandText = "SELECT seq, data FROM journal WHERE deployment_id = $deployment ORDER BY seq";
        command.Parameters.AddWithValue("$deployment", deploymentId.Value);
        return await StateRows.ReadJournalAsync(command, Where, cancellationToken);
    }

    // ---- several changes at once -----------------------------------------------------------

    public async Task ApplyAsync(StateChange change, CancellationToken cancellationToken)
    {
        await WriteAsync(
            c =>
            {
                // Every old name goes before any new one is taken: at switchover green takes
                // blue's name in the same change that renames blue, in whatever order listed.
                foreach (var (oldName, _) in change.RenamedInstances)
                {
                    RequireChanged(Execute(c, "DELETE FROM instances WHERE name = $name", ("$name", oldName)), "instance", oldName);
                }

                foreach (var (_, instance) in change.RenamedInstances)
                {
                    InsertInstance(c, instance);
                }

                foreach (var deployment in change.Deployments)
                {
                    ApplyChange(c, deployment);
                }

                foreach (var endpoint in change.Endpoints)
                {
                    UpsertEndpoint(c, endpoint, insert: true);
                }

                foreach (var entry in change.Journal)
                {
                    InsertJournal(c, entry);
                }

                var time = _time.GetUtcNow();
                foreach (var e in change.Events)
                {
                    InsertEvent(c, time, e);
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

    private SqliteConnection Open()
    {
        var connection = new SqliteConnection(_connectionString);
        connection.Open();
        using var command = connection.CreateCommand();
        // Per connection: FULL syncs the WAL at every commit (NORMAL could lose the last
        // commits on power loss, and the journal must not).
        command.CommandText = "PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000;";
        command.ExecuteNonQuery();
        return connection;
    }

    private async Task WriteAsync(Action<SqliteConnection> write, CancellationToken cancellationToken, bool durable = true)
    {
        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            using var connection = Open();
            if (!durable)
            {
                // WAL with NORMAL: the commit is written to the WAL file (a crash of Teal keeps
                // it) without waiting for the disk; the next FULL commit flushes it with its own.
                // Open() sets FULL again when the pooled connection is next used.
                using var relaxed = connection.CreateCommand();
                relaxed.CommandText = "PRAGMA synchronous=NORMAL";
                relaxed.ExecuteNonQuery();
            }

            using var transaction = connection.BeginTransaction();
            write(connection);
            transaction.Commit();
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private async Task<T?> ReadOneAsync<T>(string sql, string key, CancellationToken cancellationToken)
        where T : class
    {
        await using var connection = Open();
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.Parameters.AddWithValue("$key", key);
        return await command.ExecuteScalarAsync(cancellationToken) is string json ? FromJson<T>(json) : null;
    }

    private async Task<IReadOnlyList<T>> ReadAllAsync<T>(string sql, CancellationToken cancellationToken)
    {
        await using var connection = Open();
        await using var command = connection.CreateCommand();
        command.CommandText = sql;
        return await StateRows.ReadJsonAsync<T>(command, Where, cancellationToken);
    }

    private static void InsertInstance(SqliteConnection connection, Instance instance) =>
        Insert(connection, "INSERT INTO instances (name, data) VALUES ($name, $data)", "instance", instance.Name, ("$name", instance.Name), ("$data", Json(instance)));

    /// <summary>Reads the stored deployment inside the write transaction, applies the change, writes it back.</summary>
    private static void ApplyChange(SqliteConnection connection, DeploymentChange change)
    {
        using var read = connection.CreateCommand();
        read.CommandText = "SELECT data FROM deployments WHERE id = $id";
        read.Parameters.AddWithValue("$id", change.Id.Value);
        if (read.ExecuteScalar() is not string json)
        {
            RequireChanged(0, "deployment", change.Id.Value);
            return;
        }

        var stored = FromJson<Deployment>(json);
        var next = change.Apply(stored);
        if (!ReferenceEquals(next, stored))
        {
            RequireChanged(UpdateDeployment(connection, next), "deployment", change.Id.Value);
        }
    }

    private static int UpdateDeployment(SqliteConnection connection, Deployment deployment) =>
        Execute(connection, "UPDATE deployments SET name = $name, data = $data WHERE id = $id", ("$id", deployment.Id.Value), ("$name", deployment.Name), ("$data", Json(deployment)));

    private static int UpsertEndpoint(SqliteConnection connection, EndpointSpec endpoint, bool insert) =>
        Execute(
            connection,
            insert
                ? "INSERT INTO endpoints (name, instance, data) VALUES ($name, $instance, $data) ON CONFLICT (name) DO UPDATE SET instance = excluded.instance, data = excluded.data"
                : "UPDATE endpoints SET instance = $instance, data = $data WHERE name = $name",
            ("$name", endpoint.Name),
            ("$instance", endpoint.Instance),
            ("$data", Json(endpoint)));

    private static void InsertJournal(SqliteConnection connection, JournalEntry entry) =>
        Execute(connection, "INSERT INTO journal (deployment_id, data) VALUES ($deployment, $data)", ("$deployment", entry.DeploymentId.Value), ("$data", Json(entry)));

    private static void Insert(SqliteConnection connection, string sql, string what, string name, params (string Name, object? Value)[] parameters)
    {
        try
        {
            Execute(connection, sql, parameters);
        }
        catch (SqliteException ex) when (ex.SqliteErrorCode == SqliteConstraint)
        {
            throw StateErrors.DuplicateName(what, name, ex);
        }
    }

    private static int Execute(SqliteConnection connection, string sql, params (string Name, object? Value)[] parameters)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        foreach (var (name, value) in parameters)
        {
            command.Parameters.AddWithValue(name, value ?? DBNull.Value);
        }

        return command.ExecuteNonQuery();
    }

    private static long LastRowId(SqliteConnection connection)
    {
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT last_insert_rowid()";
        return (long)command.ExecuteScalar()!; // last_insert_rowid() is never NULL.
    }

    private static void RequireChanged(int rows, string what, string key) => StateErrors.RequireChanged(rows, what, key);

    private static string Json<T>(T value) => JsonSerializer.Serialize(value, TealJson.Options);

    /// <summary>How errors name this store.</summary>
    private const string Where = "the state file";

    private static T FromJson<T>(string json) => StateRows.FromJson<T>(json, Where);
}
