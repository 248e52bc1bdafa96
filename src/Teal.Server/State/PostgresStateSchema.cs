using Npgsql;

namespace Teal.Server.State;

/// <summary>
/// The PostgreSQL state store's schema (<c>teal</c>) and its forward migrations: the SQLite
/// store's idea (<see cref="StateSchema"/>) in PostgreSQL's types. Each script moves the schema
/// one version up in one transaction with the version bump; a migration holds an advisory lock,
/// so two control-plane machines starting together migrate once. Scripts are never edited once
/// released: a change is a new script.
/// </summary>
internal static class PostgresStateSchema
{
    /// <summary>Every table lives in this schema of the state database.</summary>
    public const string Schema = "teal";

    /// <summary>
    /// Advisory lock keys (<c>pg_advisory_lock(Class, n)</c>): one Teal control plane per state
    /// database. The class is "teal" in ASCII.
    /// </summary>
    public const int LockClass = 0x7465616C;

    /// <summary>Held for its whole session by the leader's dedicated connection.</summary>
    public const int LeaderLock = 1;

    /// <summary>Shared by every leader write transaction; taken exclusively by a new leader to wait for the old one's last write.</summary>
    public const int WriteBarrier = 2;

    /// <summary>Serializes event appends so that sequence order is commit order.</summary>
    public const int EventOrder = 3;

    public const int MigrationLock = 4;

    /// <summary>SQLSTATE the leader guard raises when the writer no longer holds the leader lock.</summary>
    public const string NotLeaderState = "TL001";

    private static readonly string[] Migrations =
    [
        // 1: records as JSON (kept as written, as in the SQLite file), with the columns lookups and
        // uniqueness need. Names sort and compare byte-wise (COLLATE "C"), as SQLite's do.
        $$"""
        CREATE TABLE instances (
            name text COLLATE "C" PRIMARY KEY,
            data json NOT NULL);
        CREATE TABLE deployments (
            id text COLLATE "C" PRIMARY KEY,
            name text COLLATE "C" NOT NULL UNIQUE,
            data json NOT NULL);
        CREATE TABLE endpoints (
            name text COLLATE "C" PRIMARY KEY,
            instance text COLLATE "C" NOT NULL,
            data json NOT NULL);
        CREATE INDEX endpoints_instance ON endpoints (instance);
        CREATE TABLE events (
            seq bigserial PRIMARY KEY,
            time text NOT NULL,
            deployment_id text COLLATE "C",
            kind text NOT NULL,
            message text NOT NULL,
            data json NOT NULL);
        CREATE INDEX events_deployment ON events (deployment_id, seq);
        CREATE TABLE journal (
            seq bigserial PRIMARY KEY,
            deployment_id text COLLATE "C" NOT NULL,
            data json NOT NULL);
        CREATE INDEX journal_deployment ON journal (deployment_id, seq);
        -- Passwords, sealed with the key every control-plane machine is given (state.key).
        CREATE TABLE secrets (
            reference text COLLATE "C" PRIMARY KEY,
            sealed bytea NOT NULL);
        CREATE TABLE secret_key (
            id integer PRIMARY KEY CHECK (id = 1),
            key_id text NOT NULL);
        -- Who leads, as the leader wrote it when it took the lock (the lock says whether it still does).
        CREATE TABLE leader (
            id integer PRIMARY KEY CHECK (id = 1),
            url text NOT NULL,
            host text NOT NULL,
            pid integer NOT NULL,
            since text NOT NULL);
        -- Run first in every write transaction of the leader: waits for no one (shared), and
        -- refuses once the writer's lock session is gone, so a leader that lost its lock cannot
        -- write even before it notices.
        CREATE FUNCTION leader_guard(leader_backend integer) RETURNS void LANGUAGE plpgsql AS $guard$
        BEGIN
            PERFORM pg_advisory_xact_lock_shared({{LockClass}}, {{WriteBarrier}});
            IF NOT EXISTS (
                SELECT 1 FROM pg_locks
                WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND classid = {{LockClass}} AND objid = {{LeaderLock}} AND objsubid = 2 AND pid = leader_backend AND granted) THEN
                RAISE EXCEPTION 'this teal serve no longer holds the leader lock' USING ERRCODE = '{{NotLeaderState}}';
            END IF;
        END
        $guard$;
        """,
    ];

    /// <summary>The version this build of Teal writes.</summary>
    public static int CurrentVersion => Migrations.Length;

    /// <summary>Brings the schema up to <see cref="CurrentVersion"/>; refuses a schema from a newer Teal.</summary>
    public static void Migrate(NpgsqlConnection connection, string where)
    {
        while (true)
        {
            using var transaction = connection.BeginTransaction();
            Execute(connection, transaction, $"SELECT pg_advisory_xact_lock({LockClass}, {MigrationLock})");
            Execute(connection, transaction, $"CREATE SCHEMA IF NOT EXISTS {Schema}; CREATE TABLE IF NOT EXISTS {Schema}.schema_version (version integer NOT NULL)");
            // Read under the lock: another machine may have migrated while this one waited.
            var version = ReadVersion(connection, transaction);
            if (version > CurrentVersion)
            {
                throw StateErrors.NewerSchema($"database {where}", version, CurrentVersion);
            }

            if (version == CurrentVersion)
            {
                transaction.Commit();
                return;
            }

            Execute(connection, transaction, $"SET LOCAL search_path = {Schema}; " + Migrations[version]);
            Execute(connection, transaction, $"DELETE FROM {Schema}.schema_version; INSERT INTO {Schema}.schema_version (version) VALUES ({version + 1})");
            transaction.Commit();
        }
    }

    public static int ReadVersion(NpgsqlConnection connection, NpgsqlTransaction? transaction = null)
    {
        using var command = new NpgsqlCommand($"SELECT max(version) FROM {Schema}.schema_version", connection, transaction);
        return command.ExecuteScalar() is int v ? v : 0;
    }

    private static void Execute(NpgsqlConnection connection, NpgsqlTransaction? transaction, string sql)
    {
        using var command = new NpgsqlCommand(sql, connection, transaction);
        command.ExecuteNonQuery();
    }
}
