using MySqlConnector;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.MySql.Connections;

namespace Teal.MySql.Replication;

/// <summary>
/// Builds and takes down one deployment's replication: Teal's schema on blue, green fenced,
/// definitions (mariadb-dump) then rows (<see cref="SnapshotCopy"/>) then triggers copied, and
/// green replicating from blue by GTID from the snapshot's position. The copy runs in the
/// background so COPY_DATA reports per-table progress while it runs.
/// </summary>
internal sealed class ReplicationSetup(LinkSessions sessions, Fencing fencing, SnapshotCopy copy, DumpTool dump) : IAsyncDisposable
{
    private readonly CancellationTokenSource _stopping = new();
    private readonly object _gate = new();
    private Task? _copying;

    /// <summary>Green's replica applier threads (<c>slave_parallel_threads</c>).</summary>
    public const int ParallelApplyThreads = 4;

    /// <summary>The account green replicates with, on blue (only REPLICATION SLAVE; its password lives in green's replica settings only).</summary>
    public string ReplicationUser => sessions.Schema + "_r";

    /// <summary>Why the background copy failed, or null.</summary>
    public string? CopyFailure => _copying is { IsFaulted: true } t ? (t.Exception!.InnerException as TealException)?.Message ?? t.Exception!.InnerException!.Message : null;

    /// <summary>Whether the background copy is still running.</summary>
    public bool Copying => _copying is { IsCompleted: false };

    public async Task CopySchemaAsync(CancellationToken cancellationToken)
    {
        await using (var blue = await sessions.OpenAsync(Side.Blue, cancellationToken))
        {
            await TealObjects.CreateHeartbeatAsync(blue, sessions.Schema, cancellationToken);
        }

        // Nobody but Teal writes on green from here until it opens at switchover.
        await fencing.FenceAsync(Side.Green, cancellationToken);
        await using var blueSchemas = await sessions.OpenAsync(Side.Blue, cancellationToken);
        var schemas = await TealObjects.UserSchemasAsync(blueSchemas, sessions.Schema, cancellationToken);
        if (sessions.Spec.CopyRoles)
        {
            await dump.LoadAsync(sessions.Spec.Green, FilterAccounts(await dump.DumpAsync(sessions.Spec.Blue, ["--system=users", "--skip-comments"], cancellationToken)), cancellationToken);
        }

        // Tables, views, routines and events now; triggers after the rows (they would fire on the copy).
        var definitions = await dump.DumpAsync(
            sessions.Spec.Blue,
            ["--no-data", "--skip-triggers", "--routines", "--events", "--skip-add-locks", "--skip-lock-tables", "--skip-comments", "--single-transaction", "--databases", .. schemas],
            cancellationToken);
        await dump.LoadAsync(sessions.Spec.Green, definitions, cancellationToken);
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await using var green = await sessions.OpenUnloggedAsync(Side.Green, cancellationToken);
        await TealObjects.CreateFenceTablesAsync(green, cancellationToken);
        if (await OursAsync(green, cancellationToken) is not null)
        {
            // Teal restarted after the copy: replication is set up already.
            copy.MarkAllReady(await TableNamesAsync(cancellationToken));
            return;
        }

        lock (_gate)
        {
            if (_copying is not null)
            {
                return;
            }

            _copying = Task.Run(() => CopyAndReplicateAsync(_stopping.Token), CancellationToken.None);
        }
    }

    /// <summary>Green's replication connection if it is this deployment's, else null.</summary>
    public async Task<ReplicaStatus?> OursAsync(MySqlConnection green, CancellationToken cancellationToken)
    {
        var replica = await ReplicaStatus.ReadAsync(green, cancellationToken);
        return replica is not null && replica.MasterUser == ReplicationUser ? replica : null;
    }

    /// <summary>Opens green: its replication stops for good (blue is fenced and drained, green has applied everything), then the fence lifts.</summary>
    /// <remarks>Inside the write pause: replication's end goes in the lift's first round trip.</remarks>
    public async Task OpenGreenAsync(CancellationToken cancellationToken)
    {
        await using var green = await sessions.OpenAsync(Side.Green, cancellationToken);
        var stop = await OursAsync(green, cancellationToken) is not null ? "STOP SLAVE; RESET SLAVE ALL;" : string.Empty;
        await Fencing.LiftAsync(green, cancellationToken, stop);
    }

    /// <summary>Stops forward replication for good: green's replica connection and blue's replication account.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await using (var green = await sessions.OpenAsync(Side.Green, cancellationToken))
        {
            if (await OursAsync(green, cancellationToken) is not null)
            {
                await Sql.ExecuteAsync(green, "STOP SLAVE", cancellationToken);
                await Sql.ExecuteAsync(green, "RESET SLAVE ALL", cancellationToken);
            }
        }

        await using var blue = await sessions.OpenUnloggedAsync(Side.Blue, cancellationToken);
        await Sql.ExecuteAsync(blue, $"DROP USER IF EXISTS {Sql.Account(ReplicationUser, "%")}", cancellationToken);
    }

    /// <summary>Removes everything this deployment created on both sides; green's fence is lifted if replication still ran.</summary>
    public async Task RemoveAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        if (_copying is not null)
        {
            try
            {
                await _copying;
            }
            catch (Exception ex) when (ex is OperationCanceledException or TealException or MySqlException)
            {
                // Its failure is what the remove cleans up after.
            }
        }

        await using (var green = await sessions.OpenUnloggedAsync(Side.Green, cancellationToken))
        {
            var replicating = await OursAsync(green, cancellationToken) is not null;
            if (replicating)
            {
                await Sql.ExecuteAsync(green, "STOP SLAVE", cancellationToken);
                await Sql.ExecuteAsync(green, "RESET SLAVE ALL", cancellationToken);
            }

            await TealObjects.CreateFenceTablesAsync(green, cancellationToken);
            var markers = await Sql.StringAsync(green, $"SELECT value FROM {Sql.Table(TealObjects.FenceSchema, "settings")} WHERE name = @n", cancellationToken, ("@n", CopyMarker));
            if (replicating || markers is not null)
            {
                await fencing.UnfenceAsync(Side.Green, cancellationToken);
            }

            await Sql.ExecuteAsync(green, $"DELETE FROM {Sql.Table(TealObjects.FenceSchema, "settings")} WHERE name = @n", cancellationToken, ("@n", CopyMarker));
            await Sql.ExecuteAsync(green, $"DROP DATABASE IF EXISTS {Sql.Id(sessions.Schema)}", cancellationToken);
        }

        await using var blue = await sessions.OpenUnloggedAsync(Side.Blue, cancellationToken);
        await Sql.ExecuteAsync(blue, $"DROP USER IF EXISTS {Sql.Account(ReplicationUser, "%")}", cancellationToken);
        await Sql.ExecuteAsync(blue, $"DROP DATABASE IF EXISTS {Sql.Id(sessions.Schema)}", cancellationToken);
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        _stopping.Dispose();
    }

    private string CopyMarker => sessions.Schema + ".copy";

    private async Task CopyAndReplicateAsync(CancellationToken cancellationToken)
    {
        await using (var green = await sessions.OpenUnloggedAsync(Side.Green, cancellationToken))
        {
            var marker = await Sql.StringAsync(green, $"SELECT value FROM {Sql.Table(TealObjects.FenceSchema, "settings")} WHERE name = @n", cancellationToken, ("@n", CopyMarker));
            if (marker is not null)
            {
                throw new TealException(
                    "create.interrupted",
                    "Teal stopped while copying rows to green, which is half-loaded",
                    "delete the deployment (teal delete ID --delete-target) and create it again");
            }

            await Sql.ExecuteAsync(green, $"INSERT INTO {Sql.Table(TealObjects.FenceSchema, "settings")} (name, value) VALUES (@n, 'started')", cancellationToken, ("@n", CopyMarker));
        }

        var snapshot = await copy.CopyAsync(cancellationToken);
        await using (var blue = await sessions.OpenAsync(Side.Blue, cancellationToken))
        {
            var schemas = await TealObjects.UserSchemasAsync(blue, sessions.Schema, cancellationToken);
            var triggers = await dump.DumpAsync(sessions.Spec.Blue, ["--no-data", "--no-create-info", "--no-create-db", "--skip-routines", "--skip-events", "--triggers", "--skip-add-locks", "--skip-lock-tables", "--skip-comments", "--databases", .. schemas], cancellationToken);
            await dump.LoadAsync(sessions.Spec.Green, triggers, cancellationToken);
        }

        await ReplicateFromAsync(snapshot, cancellationToken);
        copy.MarkReady();
    }

    private async Task ReplicateFromAsync(SnapshotPosition snapshot, CancellationToken cancellationToken)
    {
        var password = Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(24)).Replace('+', 'x').Replace('/', 'y');
        await using (var blue = await sessions.OpenUnloggedAsync(Side.Blue, cancellationToken))
        {
            var account = Sql.Account(ReplicationUser, "%");
            await Sql.ExecuteAsync(blue, $"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {Sql.Literal(password)}", cancellationToken);
            await Sql.ExecuteAsync(blue, $"ALTER USER {account} IDENTIFIED BY {Sql.Literal(password)}", cancellationToken);
            await Sql.ExecuteAsync(blue, $"GRANT REPLICATION SLAVE ON *.* TO {account}", cancellationToken);
        }

        var blueConnection = sessions.Spec.Blue;
        // "localhost" would make the replica use a Unix socket; Teal reaches blue over TCP.
        var host = blueConnection.Host == "localhost" ? "127.0.0.1" : blueConnection.Host;
        await using var green = await sessions.OpenUnloggedAsync(Side.Green, cancellationToken);
        await Sql.ExecuteAsync(green, "SET GLOBAL gtid_slave_pos = @p", cancellationToken, ("@p", snapshot.Gtid));
        await Sql.ExecuteAsync(
            green,
            $"CHANGE MASTER TO MASTER_HOST = {Sql.Literal(host)}, MASTER_PORT = {blueConnection.Port.ToString(System.Globalization.CultureInfo.InvariantCulture)}, MASTER_USER = {Sql.Literal(ReplicationUser)}, MASTER_PASSWORD = {Sql.Literal(password)}, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = 1",
            cancellationToken);
        // Parallel apply: with one applier thread green trails a blue that commits from many
        // sessions at once, and whatever it trails by at the switchover is applied while clients
        // wait. Optimistic mode still commits in blue's order (GTID positions stay exact), and
        // only applies while no replica runs — none does here, before START SLAVE.
        await Sql.ExecuteAsync(green, $"SET GLOBAL slave_parallel_threads = {ParallelApplyThreads}; SET GLOBAL slave_parallel_mode = 'optimistic'", cancellationToken);
        await Sql.ExecuteAsync(green, "START SLAVE", cancellationToken);
        await Sql.ExecuteAsync(green, $"UPDATE {Sql.Table(TealObjects.FenceSchema, "settings")} SET value = 'replicating' WHERE name = @n", cancellationToken, ("@n", CopyMarker));
    }

    private async Task<List<string>> TableNamesAsync(CancellationToken cancellationToken)
    {
        await using var blue = await sessions.OpenAsync(Side.Blue, cancellationToken);
        return (await TealObjects.TablesAsync(blue, await TealObjects.UserSchemasAsync(blue, sessions.Schema, cancellationToken), cancellationToken)).Select(t => t.FullName).ToList();
    }

    /// <summary>Accounts as mariadb-dump --system=users writes them, without Teal's own and the server's built-in ones.</summary>
    private string FilterAccounts(string sql)
    {
        string[] skip = [$"`{sessions.Spec.Blue.User}`@", $"`{sessions.Spec.Green.User}`@", "`mariadb.sys`@", "`root`@", "`mysql`@", $"`{ReplicationUser}`@"];
        return string.Join('\n', sql.Split('\n').Where(line => !skip.Any(s => line.Contains(s, StringComparison.Ordinal))));
    }
}
