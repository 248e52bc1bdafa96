using System.Globalization;
using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Processes;
using Teal.Core.Secrets;
using Teal.Postgres.Connections;

namespace Teal.Postgres.Instances;

/// <summary>A reader to make of a managed server: where it goes and how it streams.</summary>
/// <param name="Directory">The reader's instance directory.</param>
/// <param name="PrimaryControl">Teal's login on the writer (superuser with REPLICATION).</param>
/// <param name="Slot">The physical replication slot the reader streams through.</param>
/// <param name="Parameters">The writer's settings: a hot standby needs the same connection and worker limits.</param>
public sealed record ReplicaSpec(string Directory, ConnectionInfo PrimaryControl, string Slot, IReadOnlyDictionary<string, string> Parameters);

/// <summary>
/// Readers without a client tool of the writer's version (no pg_basebackup newer than 15 exists
/// on this kind of machine): the server's own backup API around a file copy, which works
/// because managed servers are local. The slot is made first, reserving WAL from before the
/// backup's checkpoint, so the reader finds every segment it needs by streaming.
/// </summary>
public sealed partial class ManagedPostgres
{
    // What a base backup leaves out (PostgreSQL docs, "Making a Base Backup Using the Low Level
    // API"): contents rebuilt at start or meaningless on another server. Directories are kept empty.
    private static readonly HashSet<string> EmptiedDirectories = new(StringComparer.Ordinal)
    {
        "pg_wal", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans",
    };

    private static readonly HashSet<string> SkippedFiles = new(StringComparer.Ordinal)
    {
        "postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map", "standby.signal", "recovery.signal", "backup_label.old", "teal.conf",
    };

    /// <summary>Copies <paramref name="primary"/> into a new server that streams from it as a hot standby, and starts it.</summary>
    public async Task<ManagedPostgresServer> CreateReplicaAsync(ManagedPostgresServer primary, ReplicaSpec spec, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(primary);
        ArgumentNullException.ThrowIfNull(spec);
        if (primary.MajorVersion < 15)
        {
            throw new TealException("instance.reader-version", $"readers of PostgreSQL {primary.Version} are not supported (pg_backup_start needs 15 or newer)", "run green on PostgreSQL 15 or newer");
        }

        var tablespaces = Path.Combine(primary.DataDirectory, "pg_tblspc");
        if (System.IO.Directory.Exists(tablespaces) && System.IO.Directory.EnumerateFileSystemEntries(tablespaces).Any())
        {
            throw new TealException("instance.reader-tablespaces", $"the server in {primary.Directory} has tablespaces; Teal copies only the data directory", "create the readers yourself (pg_basebackup) or move the tables to pg_default");
        }

        var directory = Path.GetFullPath(spec.Directory);
        if (System.IO.Directory.Exists(Path.Combine(directory, "data")))
        {
            throw new TealException("instance.directory-exists", $"{directory} already holds a server", "choose another name or remove the directory");
        }

        await using var control = new NpgsqlConnection(PostgresConnections.Builder(spec.PrimaryControl, pooling: false).ConnectionString);
        await control.OpenAsync(cancellationToken);
        await using (var slot = new NpgsqlCommand("SELECT pg_create_physical_replication_slot($1, true) WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)", control))
        {
            slot.Parameters.Add(new NpgsqlParameter { Value = spec.Slot });
            await slot.ExecuteNonQueryAsync(cancellationToken);
        }

        System.IO.Directory.CreateDirectory(directory);
        try
        {
            await PrepareDirectoryAsync(directory, cancellationToken);
            var data = Path.Combine(directory, "data");
            // A non-exclusive backup lives as long as this session: a failure below that closes
            // it aborts the backup on the writer by itself.
            await using (var start = new NpgsqlCommand("SELECT pg_backup_start($1, true)", control))
            {
                start.Parameters.Add(new NpgsqlParameter { Value = $"teal reader {spec.Slot}" });
                await start.ExecuteNonQueryAsync(cancellationToken);
            }

            CopyDataDirectory(primary.DataDirectory, data, cancellationToken);
            string label, map;
            await using (var stop = new NpgsqlCommand("SELECT labelfile, spcmapfile FROM pg_backup_stop(false)", control))
            await using (var reader = await stop.ExecuteReaderAsync(cancellationToken))
            {
                await reader.ReadAsync(cancellationToken);
                label = reader.GetString(0);
                map = reader.IsDBNull(1) ? string.Empty : reader.GetString(1);
            }

            await File.WriteAllTextAsync(Path.Combine(data, "backup_label"), label, cancellationToken);
            if (map.Length > 0)
            {
                await File.WriteAllTextAsync(Path.Combine(data, "tablespace_map"), map, cancellationToken);
            }

            await File.WriteAllTextAsync(Path.Combine(data, "standby.signal"), string.Empty, cancellationToken);
            await WithoutFenceDefaultAsync(Path.Combine(data, "postgresql.auto.conf"), cancellationToken);
            await WithoutHbaFenceAsync(data, cancellationToken);

            // The password goes to a 0600 passfile beside the data directory, never into a setting.
            var passfile = Path.Combine(directory, PassfileName);
            var c = spec.PrimaryControl;
            PrivateFile.WriteNew(passfile, PassfileLine(c));
            var settings = new Dictionary<string, string>(spec.Parameters)
            {
                ["primary_conninfo"] = $"host={c.Host} port={c.Port.ToString(CultureInfo.InvariantCulture)} user={c.User} passfile='{passfile}' application_name={spec.Slot}",
                ["primary_slot_name"] = spec.Slot,
                ["hot_standby"] = "on",
            };
            var server = new ManagedPostgresServer(directory, primary.Version, primary.BinDirectory, FreePort(), primary.ListenAddress, primary.SuperUser, OsUser);
            await WriteSettingsAsync(server, settings, cancellationToken);
            await GiveTreeAsync(directory, cancellationToken);
            File.SetUnixFileMode(data, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            await SaveStateAsync(server, cancellationToken);
            return await StartWithPortRetryAsync(server, portIsOurs: true, settings, cancellationToken);
        }
        catch
        {
            await RemoveDirectoryAsync(directory);
            await DropSlotAsync(spec.PrimaryControl, spec.Slot, CancellationToken.None);
            throw;
        }
    }

    /// <summary>The reader's passfile, beside its data directory: <c>primary_conninfo</c> names it.</summary>
    private const string PassfileName = "replication.pgpass";

    private static string PassfileLine(ConnectionInfo c) =>
        $"{PassEscape(c.Host)}:{c.Port.ToString(CultureInfo.InvariantCulture)}:*:{PassEscape(c.User)}:{PassEscape(c.Password ?? string.Empty)}\n";

    /// <summary>
    /// Gives a reader the new password of Teal's login on its writer (<c>teal instance
    /// rotate-password</c>). Its <c>primary_conninfo</c> names a passfile rather than a password,
    /// and libpq reads the passfile at each connection, so replacing the file is all it takes: no
    /// setting changes and no reload is needed (on every version Teal makes readers of, 15+); the
    /// walreceiver's current connection keeps streaming and its next one logs in with the new
    /// password. The file is replaced atomically (a 0600 file of the server's OS user beside it,
    /// then a rename), so a reconnect never reads half of it.
    /// </summary>
    public async Task SetReplicaPasswordAsync(ManagedPostgresServer reader, ConnectionInfo primaryControl, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(reader);
        ArgumentNullException.ThrowIfNull(primaryControl);
        var passfile = Path.Combine(reader.Directory, PassfileName);
        if (!File.Exists(passfile))
        {
            throw new TealException(
                "instance.rotate-has-readers",
                $"the reader in {reader.Directory} has no passfile of Teal's ({PassfileName}): Teal cannot tell how it logs in to its writer",
                "remove the reader first (teal instance remove NAME --delete-data), or keep the password");
        }

        var temporary = $"{passfile}.{Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4))}.tmp";
        try
        {
            PrivateFile.WriteNew(temporary, PassfileLine(primaryControl));
            await GiveTreeAsync(temporary, cancellationToken);
            File.Move(temporary, passfile, overwrite: true);
        }
        finally
        {
            File.Delete(temporary);
        }
    }

    /// <summary>
    /// Leaves out green's fence default (ALTER SYSTEM default_transaction_read_only, written to
    /// postgresql.auto.conf) from the copy. The unfence at open-green resets it on green only, so
    /// the reader would keep it for good: harmless while it is a hot standby (read-only by itself),
    /// but a reader promoted later would start with every transaction read-only by default.
    /// </summary>
    private static async Task WithoutFenceDefaultAsync(string autoConf, CancellationToken cancellationToken)
    {
        if (!File.Exists(autoConf))
        {
            return;
        }

        var lines = await File.ReadAllLinesAsync(autoConf, cancellationToken);
        var kept = lines.Where(l => !l.TrimStart().StartsWith("default_transaction_read_only", StringComparison.Ordinal)).ToList();
        if (kept.Count != lines.Length)
        {
            await File.WriteAllLinesAsync(autoConf, kept, cancellationToken);
        }
    }

    /// <summary>
    /// Gives the reader green's own pg_hba.conf, not the fenced one the copy took: the fence is a
    /// file of green's primary alone (Teal.Postgres/Replication/HbaFence), so that clients read on
    /// green's readers during a canary; a hot standby takes no write whoever logs in.
    /// </summary>
    private static async Task WithoutHbaFenceAsync(string data, CancellationToken cancellationToken)
    {
        var hba = Path.Combine(data, "pg_hba.conf");
        var saved = hba + Replication.HbaFence.SavedSuffix;
        if (File.Exists(hba) && File.Exists(saved) && Replication.HbaFence.IsFenced(await File.ReadAllTextAsync(hba, cancellationToken)))
        {
            await File.WriteAllTextAsync(hba, await File.ReadAllTextAsync(saved, cancellationToken), cancellationToken);
        }
    }

    /// <summary>Drops a reader's slot on its writer once the reader is gone; a writer that is gone or stopped keeps nothing to drop.</summary>
    public static async Task DropSlotAsync(ConnectionInfo primaryControl, string slot, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(primaryControl);
        NpgsqlConnection conn;
        // A busy writer can refuse or time out a login for a moment; only one that stays
        // unreachable is taken as gone (its slot then stays until dropped by hand).
        for (var attempt = 0; ; attempt++)
        {
            conn = new NpgsqlConnection(PostgresConnections.Builder(primaryControl, pooling: false).ConnectionString);
            try
            {
                await conn.OpenAsync(cancellationToken);
                break;
            }
            catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
            {
                await conn.DisposeAsync();
                if (attempt >= 9)
                {
                    return;
                }

                await Task.Delay(500, cancellationToken);
            }
        }

        await using (conn)
        {
            // The reader's walsender ends a moment after the reader stops.
            for (var attempt = 0; ; attempt++)
            {
                await using var drop = new NpgsqlCommand("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", conn);
                drop.Parameters.Add(new NpgsqlParameter { Value = slot });
                try
                {
                    await drop.ExecuteNonQueryAsync(cancellationToken);
                    return;
                }
                catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.ObjectInUse && attempt < 50)
                {
                    await Task.Delay(200, cancellationToken);
                }
            }
        }
    }

    private static void CopyDataDirectory(string from, string to, CancellationToken cancellationToken)
    {
        System.IO.Directory.CreateDirectory(to, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        foreach (var entry in new DirectoryInfo(from).EnumerateFileSystemInfos())
        {
            cancellationToken.ThrowIfCancellationRequested();
            var target = Path.Combine(to, entry.Name);
            if (entry is DirectoryInfo dir)
            {
                if (EmptiedDirectories.Contains(entry.Name))
                {
                    System.IO.Directory.CreateDirectory(target);
                    if (entry.Name == "pg_wal")
                    {
                        System.IO.Directory.CreateDirectory(Path.Combine(target, "archive_status"));
                    }

                    continue;
                }

                CopyTree(dir, target, cancellationToken);
            }
            else if (!SkippedFiles.Contains(entry.Name))
            {
                CopyFile(entry.FullName, target);
            }
        }
    }

    private static void CopyTree(DirectoryInfo from, string to, CancellationToken cancellationToken)
    {
        System.IO.Directory.CreateDirectory(to);
        IEnumerable<FileSystemInfo> entries;
        try
        {
            entries = [.. from.EnumerateFileSystemInfos()];
        }
        catch (DirectoryNotFoundException)
        {
            // Dropped while copying (a database, a temporary directory): replay of the WAL drops it too.
            return;
        }

        foreach (var entry in entries)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var target = Path.Combine(to, entry.Name);
            if (entry is DirectoryInfo dir)
            {
                CopyTree(dir, target, cancellationToken);
            }
            else if (!entry.Name.StartsWith("pgsql_tmp", StringComparison.Ordinal) && entry.Name != "pg_internal.init")
            {
                CopyFile(entry.FullName, target);
            }
        }
    }

    private static void CopyFile(string from, string to)
    {
        try
        {
            // Pages torn by concurrent writes are repaired by WAL replay (full-page images from the backup's checkpoint on).
            File.Copy(from, to, overwrite: false);
        }
        catch (FileNotFoundException)
        {
            // Removed while copying (a relation file dropped or truncated away): the WAL replays it.
        }
    }

    private async Task GiveTreeAsync(string path, CancellationToken cancellationToken)
    {
        if (OsUser is null)
        {
            return;
        }

        var result = await ProcessRunner.RunAsync(new ProcessSpec("/bin/chown", ["-R", OsUser + ":", path]), cancellationToken);
        if (!result.Succeeded)
        {
            throw new TealException("instance.chown-failed", $"could not give {path} to '{OsUser}': {result.Tail()}", "check that the user exists (scripts/setup.sh)");
        }
    }

    private static string PassEscape(string value) => value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace(":", "\\:", StringComparison.Ordinal);
}
