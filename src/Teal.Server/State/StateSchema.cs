using Microsoft.Data.Sqlite;

namespace Teal.Server.State;

/// <summary>
/// The state file's schema and its forward migrations. Each script moves the schema one
/// version up and runs in one transaction with the version bump, so a file is always at exactly
/// one known version. Scripts are never edited once released: a change is a new script.
/// </summary>
internal static class StateSchema
{
    private static readonly string[] Migrations =
    [
        // 1: records as JSON, with the columns lookups and uniqueness need.
        """
        CREATE TABLE instances (
            name TEXT PRIMARY KEY,
            data TEXT NOT NULL);
        CREATE TABLE deployments (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            data TEXT NOT NULL);
        CREATE TABLE endpoints (
            name TEXT PRIMARY KEY,
            instance TEXT NOT NULL,
            data TEXT NOT NULL);
        CREATE INDEX endpoints_instance ON endpoints (instance);
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            time TEXT NOT NULL,
            deployment_id TEXT,
            kind TEXT NOT NULL,
            message TEXT NOT NULL,
            data TEXT NOT NULL);
        CREATE INDEX events_deployment ON events (deployment_id, seq);
        CREATE TABLE journal (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            deployment_id TEXT NOT NULL,
            data TEXT NOT NULL);
        CREATE INDEX journal_deployment ON journal (deployment_id, seq);
        """,
    ];

    /// <summary>The version this build of Teal writes.</summary>
    public static int CurrentVersion => Migrations.Length;

    /// <summary>Brings the file up to <see cref="CurrentVersion"/>; refuses a file from a newer Teal.</summary>
    public static void Migrate(SqliteConnection connection, string path)
    {
        Execute(connection, null, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
        var version = ReadVersion(connection);
        if (version > CurrentVersion)
        {
            throw StateErrors.NewerSchema($"file {path}", version, CurrentVersion);
        }

        for (var next = version + 1; next <= CurrentVersion; next++)
        {
            using var transaction = connection.BeginTransaction();
            Execute(connection, transaction, Migrations[next - 1]);
            Execute(connection, transaction, "DELETE FROM schema_version");
            Execute(connection, transaction, $"INSERT INTO schema_version (version) VALUES ({next})");
            transaction.Commit();
        }
    }

    public static int ReadVersion(SqliteConnection connection)
    {
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT max(version) FROM schema_version";
        return command.ExecuteScalar() is long v ? (int)v : 0;
    }

    private static void Execute(SqliteConnection connection, SqliteTransaction? transaction, string sql)
    {
        using var command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }
}
