using System.Globalization;
using System.Text;
using Npgsql;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Processes;
using Teal.Postgres.Instances;

namespace Teal.Testing;

/// <summary>How a test PgBouncer is set up.</summary>
public sealed record PgBouncerServerOptions
{
    /// <summary><c>scram-sha-256</c> or <c>md5</c>: clients, including Teal's admin connection, log in that way.</summary>
    public string AuthType { get; init; } = "scram-sha-256";

    public string PoolMode { get; init; } = "transaction";

    /// <summary>How long PgBouncer lets a client wait for a server (held clients during a pause).</summary>
    public int QueryWaitTimeoutSeconds { get; init; } = 120;

    /// <summary>The database on the PostgreSQL server that the <c>appdb</c> entry points at.</summary>
    public string TargetDatabase { get; init; } = "postgres";

    /// <summary>The port to try first; null picks a free one. Taken ports are replaced by free ones.</summary>
    public int? Port { get; init; }

    /// <summary>
    /// The application role's SCRAM secret (from the target's <c>pg_authid</c>) in the auth_file
    /// instead of its password: PgBouncer then logs in to servers with the key it got from the
    /// client's own SCRAM login, deriving nothing per server login.
    /// </summary>
    public bool AppScramSecretInAuthFile { get; init; }
}

/// <summary>
/// A real PgBouncer for a test, the way operators run it: transaction pooling, an auth_file, an
/// admin user, TCP only (<c>unix_socket_dir</c> empty), its ini in its own test directory. It runs
/// as the server OS user (PgBouncer refuses root) and is killed on dispose, on process exit, or by
/// the next test process's sweep (<see cref="TestDirectories"/>) and scripts/stop-test-servers.sh.
/// <para>
/// The ini holds two entries for the same server: <see cref="Database"/> (<c>appdb</c>, the one
/// tests move) and <c>appdb_other</c>, which must never change. Clients log in as
/// <see cref="AppUser"/>, a role created on the target with read/write rights on all tables;
/// PgBouncer logs in to servers with the same name and password (plain text in its auth_file), so
/// <see cref="GrantAccessAsync"/> creates the role on any server the entry may be moved to.
/// </para>
/// </summary>
public sealed class PgBouncerServer : IAsyncDisposable
{
    public const string Database = "appdb";
    public const string OtherDatabase = "appdb_other";
    public const string AdminUser = "teal_admin";

    /// <summary>A user in <c>stats_users</c> only: may SHOW, may not PAUSE.</summary>
    public const string StatsUser = "teal_stats";

    private PgBouncerServer(string directory, int port, PgBouncerServerOptions options)
    {
        Directory = directory;
        Port = port;
        AppUser = "app_" + Guid.NewGuid().ToString("N")[..8];
        AppPassword = ManagedPostgres.GeneratePassword();
        AdminPassword = ManagedPostgres.GeneratePassword();
        Options = options;
    }

    public string Directory { get; }

    public string Host { get; } = "127.0.0.1";

    public int Port { get; private set; }

    public string AppUser { get; }

    public string AppPassword { get; }

    /// <summary>Password of <see cref="AdminUser"/> and <see cref="StatsUser"/>.</summary>
    public string AdminPassword { get; }

    public PgBouncerServerOptions Options { get; }

    public string ConfigFile => Path.Combine(Directory, "pgbouncer.ini");

    public string LogFile => Path.Combine(Directory, "pgbouncer.log");

    public string PidFile => Path.Combine(Directory, "pgbouncer.pid");

    /// <summary>What an operator would give Teal to drive this PgBouncer.</summary>
    public PgBouncerSpec Spec => new(Host, Port, AdminUser, Database, ConfigFile);

    public static async Task<PgBouncerServer> StartAsync(PostgresServer target, PgBouncerServerOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new PgBouncerServerOptions();
        var directory = TestDirectories.NewDirectory("pgbouncer");
        var server = new PgBouncerServer(directory, options.Port ?? ManagedPostgres.FreePort(), options);
        await server.GrantAccessAsync(target, cancellationToken);
        try
        {
            await server.WriteFilesAsync(target, cancellationToken);
            await server.LaunchAsync(cancellationToken);
            return server;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    /// <summary>Creates <see cref="AppUser"/> on <paramref name="server"/> with the same password, so the entry can point there.</summary>
    public async Task GrantAccessAsync(PostgresServer server, CancellationToken cancellationToken = default)
    {
        await server.ExecuteAsync(
            $"CREATE ROLE {AppUser} LOGIN PASSWORD '{AppPassword}'; GRANT pg_read_all_data, pg_write_all_data TO {AppUser}",
            cancellationToken: cancellationToken);
    }

    /// <summary>An Npgsql connection string through PgBouncer to <see cref="Database"/>, as an application has.</summary>
    public string ConnectionString(bool pooling = false, int maxPoolSize = 100) =>
        new NpgsqlConnectionStringBuilder
        {
            Host = Host,
            Port = Port,
            Username = AppUser,
            Password = AppPassword,
            Database = Database,
            Pooling = pooling,
            MaxPoolSize = maxPoolSize,
            // Transaction pooling: session state does not survive a transaction, so Npgsql's
            // DISCARD ALL on return to its pool is a wasted round trip.
            NoResetOnClose = true,
            Timeout = 15,
            CommandTimeout = 60,
        }.ConnectionString;

    public async Task<NpgsqlConnection> OpenAsync(CancellationToken cancellationToken = default)
    {
        var connection = new NpgsqlConnection(ConnectionString());
        await connection.OpenAsync(cancellationToken);
        return connection;
    }

    /// <summary>The entry line for <paramref name="database"/> on <paramref name="server"/>, as the ini holds it.</summary>
    public static string EntryLine(string name, PostgresServer server, string database) =>
        $"{name} = host={server.Host} port={server.Port.ToString(CultureInfo.InvariantCulture)} dbname={database}";

    public async Task<string> ReadLogAsync() => File.Exists(LogFile) ? await File.ReadAllTextAsync(LogFile) : "";

    public ValueTask DisposeAsync()
    {
        TestDirectories.KillDaemon(PidFile, "pgbouncer");
        TestDirectories.UntrackDaemon(PidFile);
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (IOException)
        {
            // The sweep at process exit removes whatever is left.
        }

        return ValueTask.CompletedTask;
    }

    private async Task WriteFilesAsync(PostgresServer target, CancellationToken cancellationToken)
    {
        var ini = new StringBuilder()
            .Append(";; PgBouncer for a Teal test\n")
            .Append("[databases]\n")
            .Append(EntryLine(Database, target, Options.TargetDatabase)).Append('\n')
            .Append("; a second entry for the same server, which Teal must leave exactly as it is\n")
            .Append(EntryLine(OtherDatabase, target, Options.TargetDatabase)).Append(" pool_size=5\n")
            .Append('\n')
            .Append("[pgbouncer]\n")
            .Append("listen_addr = ").Append(Host).Append('\n')
            .Append("listen_port = ").Append(Port.ToString(CultureInfo.InvariantCulture)).Append('\n')
            .Append("unix_socket_dir =\n")
            .Append("auth_type = ").Append(Options.AuthType).Append('\n')
            .Append("auth_file = ").Append(Path.Combine(Directory, "userlist.txt")).Append('\n')
            .Append("admin_users = ").Append(AdminUser).Append('\n')
            .Append("stats_users = ").Append(StatsUser).Append('\n')
            .Append("pool_mode = ").Append(Options.PoolMode).Append('\n')
            .Append("max_client_conn = 500\n")
            .Append("default_pool_size = 20\n")
            .Append("query_wait_timeout = ").Append(Options.QueryWaitTimeoutSeconds.ToString(CultureInfo.InvariantCulture)).Append('\n')
            // Drivers send it at startup; PgBouncer would refuse the login over it.
            .Append("ignore_startup_parameters = extra_float_digits\n")
            .Append("logfile = ").Append(LogFile).Append('\n')
            .Append("pidfile = ").Append(PidFile).Append('\n');
        await File.WriteAllTextAsync(ConfigFile, ini.ToString(), cancellationToken);

        // Plain-text passwords by default: PgBouncer logs in to servers with them (deriving the
        // SCRAM key at every server login) and checks clients against them. With the app role's
        // SCRAM secret instead, it logs in to servers with the key from the client's SCRAM login.
        var appSecret = Options.AppScramSecretInAuthFile
            ? await target.ScalarAsync<string>($"SELECT rolpassword FROM pg_authid WHERE rolname = '{AppUser}'", cancellationToken: cancellationToken)
            : AppPassword;
        var users = $"\"{AppUser}\" \"{appSecret}\"\n\"{AdminUser}\" \"{AdminPassword}\"\n\"{StatsUser}\" \"{AdminPassword}\"\n";
        await File.WriteAllTextAsync(Path.Combine(Directory, "userlist.txt"), users, cancellationToken);

        if (ProcessRunner.IsRoot)
        {
            // PgBouncer runs as the server user: it reads the files and writes its log and pid file here.
            var chown = await ProcessRunner.RunAsync(new ProcessSpec("/bin/chown", ["-R", TestDirectories.Catalog.Options.OsUser + ":", Directory]), cancellationToken);
            if (!chown.Succeeded)
            {
                throw new TealException("test.pgbouncer", $"could not give {Directory} to {TestDirectories.Catalog.Options.OsUser}: {chown.Tail()}");
            }
        }
    }

    private async Task LaunchAsync(CancellationToken cancellationToken)
    {
        TestDirectories.TrackDaemon(PidFile, "pgbouncer");
        // A free port can be taken between the check and PgBouncer's bind (tests start servers in
        // parallel). PgBouncer binds after it has daemonized, so -d still exits 0; it then logs
        // "nowhere to listen on" and exits. Only its own "listening on" line proves the port is
        // its: a connect could reach whoever took it. Try another port then, like ManagedPostgres.
        for (var attempt = 1; ; attempt++)
        {
            var logOffset = (await ReadLogAsync()).Length;
            // -d: PgBouncer forks, writes its pid file and detaches its output, so runuser returns.
            var result = await ProcessRunner.RunAsync(
                new ProcessSpec("/usr/sbin/pgbouncer", ["-d", "-q", ConfigFile]) { RunAs = TestDirectories.Catalog.Options.OsUser, Timeout = TimeSpan.FromSeconds(30) },
                cancellationToken);
            if (!result.Succeeded)
            {
                throw new TealException("test.pgbouncer", $"pgbouncer did not start: {result.Tail()} {await ReadLogAsync()}");
            }

            if (await WaitUntilListeningAsync(logOffset, cancellationToken))
            {
                return;
            }

            if (attempt == 3)
            {
                throw new TealException("test.pgbouncer", $"pgbouncer found no free port in 3 attempts: {await ReadLogAsync()}");
            }

            var previous = $"listen_port = {Port.ToString(CultureInfo.InvariantCulture)}\n";
            Port = ManagedPostgres.FreePort();
            var ini = await File.ReadAllTextAsync(ConfigFile, cancellationToken);
            // Rewriting in place keeps the file's owner (the server user).
            await File.WriteAllTextAsync(ConfigFile, ini.Replace(previous, $"listen_port = {Port.ToString(CultureInfo.InvariantCulture)}\n", StringComparison.Ordinal), cancellationToken);
        }
    }

    /// <summary>True once PgBouncer logged that it listens on <see cref="Port"/>; false when it could not bind.</summary>
    private async Task<bool> WaitUntilListeningAsync(int logOffset, CancellationToken cancellationToken)
    {
        var listening = $"listening on {Host}:{Port.ToString(CultureInfo.InvariantCulture)}";
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (DateTime.UtcNow < deadline)
        {
            var log = await ReadLogAsync();
            // Only what this attempt logged: an earlier attempt's failure is in the same file.
            var fresh = log.Length >= logOffset ? log[logOffset..] : log;
            if (fresh.Contains(listening, StringComparison.Ordinal))
            {
                return true;
            }

            if (fresh.Contains("nowhere to listen", StringComparison.Ordinal))
            {
                return false;
            }

            await Task.Delay(50, cancellationToken);
        }

        throw new TealException("test.pgbouncer", $"pgbouncer did not report listening on {Host}:{Port} within 15 s: {await ReadLogAsync()}");
    }
}
