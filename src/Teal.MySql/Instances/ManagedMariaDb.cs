using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Teal.Core.Errors;
using Teal.Processes;
using Teal.MySql.Engines;

namespace Teal.MySql.Instances;

/// <summary>What to create: a MariaDB server of a version, with settings, in a directory.</summary>
/// <param name="Directory">Instance directory; Teal puts <c>data/</c>, <c>my.cnf</c> and <c>server.log</c> in it.</param>
/// <param name="Version">Engine version ("10", "10.11", "10.11.19").</param>
/// <param name="Password">Password of the account Teal creates (<see cref="User"/>) and of root@localhost.</param>
public sealed record ManagedMariaDbSpec(string Directory, string Version, string Password)
{
    /// <summary>Port to listen on; a free one is chosen when null.</summary>
    public int? Port { get; init; }

    public string ListenAddress { get; init; } = "127.0.0.1";

    /// <summary>Teal's account (ALL PRIVILEGES WITH GRANT OPTION, from any host).</summary>
    public string User { get; init; } = "teal";

    /// <summary>Server settings (the parameter group), written to <c>my.cnf</c>.</summary>
    public IReadOnlyDictionary<string, string> Parameters { get; init; } = new Dictionary<string, string>();
}

/// <summary>A managed server as it is on disk: where, which binaries, which port, which server_id.</summary>
public sealed record ManagedMariaDbServer(string Directory, string Version, string BinDirectory, int Port, string ListenAddress, string User, string? OsUser, long ServerId)
{
    public string DataDirectory => Path.Combine(Directory, "data");

    public string LogFile => Path.Combine(Directory, "server.log");

    public string ConfigFile => Path.Combine(Directory, "my.cnf");

    public string PidFile => Path.Combine(Directory, "mariadbd.pid");

    public string Socket => Path.Combine(Directory, "mariadbd.sock");
}

/// <summary>
/// Creates, starts, stops and removes local MariaDB servers that Teal runs itself: managed
/// instances, managed greens, and the servers the tests use. When Teal runs as root the servers
/// run as <see cref="MariaDbEngineOptions.OsUser"/>. A server is started detached (its own session,
/// stdio closed) and outlives the Teal process on purpose, as pg_ctl's servers do: a control
/// plane that restarts must not take production databases down with it.
/// </summary>
public sealed class ManagedMariaDb(MariaDbEngineCatalog catalog)
{
    /// <summary>Name of the description file in the instance directory (not PostgreSQL's, so sweeps tell them apart).</summary>
    public const string StateFileName = "teal-mariadb.json";

    /// <summary>
    /// Settings every managed server gets; the spec's parameters override them. They are what
    /// blue/green needs on both sides: green becomes the binlog source after a switchover.
    /// </summary>
    public static IReadOnlyDictionary<string, string> BaseParameters { get; } = new Dictionary<string, string>
    {
        ["log-bin"] = "binlog",
        ["relay-log"] = "relay",
        ["binlog-format"] = "ROW",
        ["binlog-row-image"] = "FULL",
        ["log-slave-updates"] = "ON",
        ["gtid-strict-mode"] = "ON",
        ["expire-logs-days"] = "7",
        // Accounts are matched by address; a DNS lookup per login only adds latency and failure.
        ["skip-name-resolve"] = "ON",
        ["max-connections"] = "500",
        ["character-set-server"] = "utf8mb4",
        ["collation-server"] = "utf8mb4_general_ci",
        // A green applies blue's binlog with several threads (commit order kept), also after a
        // restart; ReplicationSetup sets the same when replication starts (see there why).
        ["slave-parallel-threads"] = "4",
        ["slave-parallel-mode"] = "optimistic",
    };

    private string? OsUser => ProcessRunner.IsRoot ? catalog.Options.OsUser : null;

    /// <summary>Runs mariadb-install-db, writes the settings, creates Teal's account and starts the server.</summary>
    public async Task<ManagedMariaDbServer> CreateAsync(ManagedMariaDbSpec spec, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        var engine = await catalog.ResolveAsync(spec.Version, cancellationToken);
        var directory = Path.GetFullPath(spec.Directory);
        if (System.IO.Directory.Exists(Path.Combine(directory, "data")))
        {
            throw new TealException("instance.directory-exists", $"{directory} already holds a server", "choose another name or remove the directory");
        }

        System.IO.Directory.CreateDirectory(directory);
        try
        {
            await PrepareDirectoryAsync(directory, cancellationToken);
            // Its own temporary directory: bootstraps running side by side in a shared /tmp trip over each other's files.
            var tmp = Path.Combine(directory, "tmp");
            System.IO.Directory.CreateDirectory(tmp);
            await ChownAsync(tmp, cancellationToken);
            var install = await RunAsync(
                MariaDbEngineCatalog.Tool(engine, "mariadb-install-db"),
                ["--no-defaults", $"--datadir={Path.Combine(directory, "data")}", $"--tmpdir={tmp}", "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"],
                TimeSpan.FromMinutes(3),
                cancellationToken);
            if (!install.Succeeded)
            {
                throw new TealException("instance.install-db-failed", $"mariadb-install-db failed: {install.Tail()}", "see the message above; the directory was removed");
            }

            // server_id must differ between blue and green (and any other server in a
            // replication topology): a random 31-bit value makes a clash practically impossible.
            var serverId = RandomNumberGenerator.GetInt32(2, int.MaxValue);
            var port = spec.Port ?? FreePort();
            var server = new ManagedMariaDbServer(directory, engine.Version, engine.BinDirectory, port, spec.ListenAddress, spec.User, OsUser, serverId);
            await WriteSettingsAsync(server, spec.Parameters, cancellationToken);
            await SaveStateAsync(server, cancellationToken);

            // The first start runs an init file that secures the server before it accepts any
            // connection: install-db leaves root without a password on every loopback address.
            var init = Path.Combine(directory, "init.sql");
            await File.WriteAllTextAsync(init, InitSql(spec.User, spec.Password), cancellationToken);
            File.SetUnixFileMode(init, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            await ChownAsync(init, cancellationToken);
            try
            {
                return await StartWithPortRetryAsync(server, spec.Port is null, spec.Parameters, init, cancellationToken);
            }
            finally
            {
                File.Delete(init);
            }
        }
        catch
        {
            // Nothing half-made is left behind: a failed create stops what it started and removes what it wrote.
            await StopByPidAsync(Path.Combine(directory, "mariadbd.pid"), Path.Combine(directory, "my.cnf"), immediate: true);
            await RemoveDirectoryAsync(directory);
            throw;
        }
    }

    /// <summary>Reads a managed server's description from its directory.</summary>
    public static Task<ManagedMariaDbServer> LoadAsync(string directory, CancellationToken cancellationToken) =>
        LocalServers.LoadStateAsync<ManagedMariaDbServer>(directory, StateFileName, "Teal-managed MariaDB server", cancellationToken);

    public Task StartAsync(ManagedMariaDbServer server, CancellationToken cancellationToken) => StartAsync(server, initFile: null, cancellationToken);

    /// <summary>Stops the server; <paramref name="immediate"/> kills it (crash recovery on the next start).</summary>
    public static async Task StopAsync(ManagedMariaDbServer server, bool immediate, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(server);
        if (!await StopByPidAsync(server.PidFile, server.ConfigFile, immediate))
        {
            throw new TealException("instance.stop-failed", $"MariaDB in {server.Directory} did not stop within 60 s", $"see {server.LogFile}");
        }
    }

    public static Task<bool> IsRunningAsync(ManagedMariaDbServer server, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(server);
        return Task.FromResult(RunningPid(server.PidFile, server.ConfigFile) is not null);
    }

    /// <summary>Stops the server (immediately) and deletes its directory.</summary>
    public static async Task RemoveAsync(ManagedMariaDbServer server, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(server);
        await StopAsync(server, immediate: true, cancellationToken);
        await RemoveDirectoryAsync(server.Directory);
    }

    /// <inheritdoc cref="LocalServers.FreePort"/>
    public static int FreePort() => LocalServers.FreePort();

    /// <inheritdoc cref="LocalServers.GeneratePassword"/>
    public static string GeneratePassword() => LocalServers.GeneratePassword();

    /// <summary>
    /// Kills the server whose pid is in <paramref name="pidFile"/> if that pid still runs a
    /// mariadbd started with <paramref name="configFile"/> (pids are reused). Returns false when
    /// it did not exit within 60 s.
    /// </summary>
    public static async Task<bool> StopByPidAsync(string pidFile, string configFile, bool immediate)
    {
        var pid = RunningPid(pidFile, configFile);
        if (pid is null)
        {
            return true;
        }

        // SIGTERM is mariadbd's clean shutdown; SIGKILL leaves InnoDB to recover on the next start.
        // SIGKILL is sent in-process: it must also work from a process-exit handler, where
        // starting a child process (/bin/kill) is not reliable.
        if (immediate)
        {
            try
            {
                using var process = System.Diagnostics.Process.GetProcessById(pid.Value);
                process.Kill();
            }
            catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
            {
                // Already gone.
            }
        }
        else
        {
            await ProcessRunner.RunAsync(new ProcessSpec("/bin/kill", ["-TERM", pid.Value.ToString(CultureInfo.InvariantCulture)]) { Timeout = TimeSpan.FromSeconds(10) }, CancellationToken.None);
        }
        for (var waited = 0; waited < 600; waited++)
        {
            if (!Directory.Exists($"/proc/{pid}"))
            {
                return true;
            }

            await Task.Delay(100);
        }

        return false;
    }

    private static int? RunningPid(string pidFile, string configFile)
    {
        try
        {
            if (!File.Exists(pidFile) || !int.TryParse(File.ReadAllText(pidFile).Trim(), out var pid))
            {
                return null;
            }

            var commandLine = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
            return commandLine.Contains("mariadbd", StringComparison.Ordinal) && commandLine.Contains(configFile, StringComparison.Ordinal) ? pid : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    private async Task StartAsync(ManagedMariaDbServer server, string? initFile, CancellationToken cancellationToken)
    {
        var logLength = File.Exists(server.LogFile) ? new FileInfo(server.LogFile).Length : 0;
        List<string> args = ["-c", "exec /usr/bin/setsid -f \"$0\" \"$@\" </dev/null >/dev/null 2>&1", Path.Combine(server.BinDirectory, "mariadbd"), $"--defaults-file={server.ConfigFile}"];
        if (initFile is not null)
        {
            args.Add($"--init-file={initFile}");
        }

        var launched = await RunAsync("/bin/sh", args, TimeSpan.FromSeconds(30), cancellationToken);
        if (!launched.Succeeded)
        {
            throw new TealException("instance.start-failed", $"MariaDB {server.Version} in {server.Directory} could not be launched: {launched.Tail()}", $"see {server.LogFile}");
        }

        // mariadbd says "ready for connections" once it listens, or "Aborting" when it gives up.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        while (DateTime.UtcNow < deadline)
        {
            var log = ReadLogFrom(server.LogFile, logLength);
            if (log.Contains("ready for connections", StringComparison.Ordinal))
            {
                return;
            }

            if (log.Contains("Aborting", StringComparison.Ordinal))
            {
                throw new TealException("instance.start-failed", $"MariaDB {server.Version} in {server.Directory} did not start: {ErrorLines(log)}", $"see {server.LogFile}");
            }

            await Task.Delay(100, cancellationToken);
        }

        throw new TealException("instance.start-failed", $"MariaDB {server.Version} in {server.Directory} was not ready within 90 s", $"see {server.LogFile}");
    }

    private async Task<ManagedMariaDbServer> StartWithPortRetryAsync(ManagedMariaDbServer server, bool portIsOurs, IReadOnlyDictionary<string, string> parameters, string initFile, CancellationToken cancellationToken)
    {
        // A free port can be taken between the check and the server's bind (tests run many
        // servers in parallel); when we chose the port, choose another and try again.
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await StartAsync(server, initFile, cancellationToken);
                return server;
            }
            catch (TealException ex) when (portIsOurs && attempt < 5 && (ex.Message.Contains("Bind on TCP/IP port", StringComparison.Ordinal) || ex.Message.Contains("Address already in use", StringComparison.Ordinal)))
            {
                server = server with { Port = FreePort() };
                await WriteSettingsAsync(server, parameters, cancellationToken);
                await SaveStateAsync(server, cancellationToken);
            }
        }
    }

    /// <summary>
    /// Run by the first start before the server listens (one statement per line, as init-file
    /// wants): no anonymous accounts (they shadow <c>user@%</c> logins from localhost), root only
    /// on localhost and with the generated password, Teal's account, and an empty binlog so the
    /// server's GTID history starts with its users' transactions.
    /// </summary>
    private static string InitSql(string user, string password)
    {
        var account = Connections.Sql.Account(user, "%");
        var lines = new[]
        {
            "SET SESSION sql_log_bin = 0;",
            "DELETE FROM mysql.global_priv WHERE User = '';",
            "DELETE FROM mysql.global_priv WHERE User = 'root' AND Host <> 'localhost';",
            "FLUSH PRIVILEGES;",
            $"ALTER USER 'root'@'localhost' IDENTIFIED BY {Connections.Sql.Literal(password)};",
            $"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {Connections.Sql.Literal(password)};",
            $"GRANT ALL PRIVILEGES ON *.* TO {account} WITH GRANT OPTION;",
            "RESET MASTER;",
        };
        return string.Join('\n', lines) + "\n";
    }

    private async Task WriteSettingsAsync(ManagedMariaDbServer server, IReadOnlyDictionary<string, string> parameters, CancellationToken cancellationToken)
    {
        var settings = new Dictionary<string, string>(BaseParameters, StringComparer.OrdinalIgnoreCase)
        {
            ["datadir"] = server.DataDirectory,
            ["port"] = server.Port.ToString(CultureInfo.InvariantCulture),
            ["bind-address"] = server.ListenAddress,
            ["socket"] = server.Socket,
            ["pid-file"] = server.PidFile,
            ["log-error"] = server.LogFile,
            ["tmpdir"] = Path.Combine(server.Directory, "tmp"),
            ["server-id"] = server.ServerId.ToString(CultureInfo.InvariantCulture),
        };
        foreach (var (k, v) in parameters)
        {
            settings[k.Replace('_', '-')] = v;
        }

        var text = new StringBuilder("# Written by Teal. Settings of this managed instance.\n[mariadbd]\n");
        foreach (var (k, v) in settings)
        {
            text.Append(k).Append(" = ").Append(v).Append('\n');
        }

        await File.WriteAllTextAsync(server.ConfigFile, text.ToString(), cancellationToken);
        await ChownAsync(server.ConfigFile, cancellationToken);
    }

    private static Task SaveStateAsync(ManagedMariaDbServer server, CancellationToken cancellationToken) =>
        LocalServers.SaveStateAsync(server.Directory, StateFileName, server, cancellationToken);

    private ServerUser Owner => new(OsUser, "Teal runs MariaDB as that user, not as root: put the data dir where it can reach (e.g. teal serve --data-dir /var/lib/teal), or set TEAL_MYSQL_OS_USER");

    private Task PrepareDirectoryAsync(string directory, CancellationToken cancellationToken) => Owner.PrepareDirectoryAsync(directory, cancellationToken);

    private Task ChownAsync(string path, CancellationToken cancellationToken) => Owner.GiveAsync(path, cancellationToken);

    private Task<ProcessResult> RunAsync(string program, IReadOnlyList<string> arguments, TimeSpan timeout, CancellationToken cancellationToken) =>
        Owner.RunAsync(program, arguments, timeout, cancellationToken);

    private static string ReadLogFrom(string logFile, long offset)
    {
        try
        {
            using var stream = new FileStream(logFile, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            if (stream.Length <= offset)
            {
                return string.Empty;
            }

            stream.Position = offset;
            using var reader = new StreamReader(stream);
            return reader.ReadToEnd();
        }
        catch (IOException)
        {
            return string.Empty;
        }
    }

    private static string ErrorLines(string log) =>
        string.Join(" | ", log.Split('\n').Where(l => l.Contains("[ERROR]", StringComparison.Ordinal)).TakeLast(3).Select(l => l.Trim()));

    private static Task RemoveDirectoryAsync(string directory) => LocalServers.RemoveDirectoryAsync(directory);
}
