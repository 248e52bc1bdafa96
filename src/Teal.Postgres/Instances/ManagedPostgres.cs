using System.Globalization;
using System.Text;
using Teal.Core.Errors;
using Teal.Core.Instances;
using Teal.Processes;
using Teal.Core.Secrets;
using Teal.Postgres.Engines;

namespace Teal.Postgres.Instances;

/// <summary>What to create: a PostgreSQL server of a version, with settings, in a directory.</summary>
/// <param name="Directory">Instance directory; Teal puts <c>data/</c> and <c>server.log</c> in it.</param>
/// <param name="Version">Engine version to run ("15", "17", "17.10").</param>
/// <param name="Password">Password of the superuser initdb creates.</param>
public sealed record ManagedPostgresSpec(string Directory, string Version, string Password)
{
    /// <summary>Port to listen on; a free one is chosen when null.</summary>
    public int? Port { get; init; }

    public string ListenAddress { get; init; } = "127.0.0.1";

    public string SuperUser { get; init; } = "postgres";

    /// <summary>Server settings (the parameter group), written to <c>teal.conf</c>.</summary>
    public IReadOnlyDictionary<string, string> Parameters { get; init; } = new Dictionary<string, string>();
}

/// <summary>A managed server as it is on disk: where, which binaries, which port.</summary>
public sealed record ManagedPostgresServer(string Directory, string Version, string BinDirectory, int Port, string ListenAddress, string SuperUser, string? OsUser)
{
    public string DataDirectory => Path.Combine(Directory, "data");

    public string LogFile => Path.Combine(Directory, "server.log");

    public int MajorVersion => int.Parse(Version.Split('.')[0], CultureInfo.InvariantCulture);
}

/// <summary>
/// Creates, starts, stops and removes local PostgreSQL servers that Teal runs itself: managed
/// instances, managed greens, and the servers the tests use. When Teal runs as root the servers
/// run as <see cref="PostgresEngineOptions.OsUser"/>, because PostgreSQL refuses to run as root.
/// Servers are started with <c>pg_ctl</c> and outlive the Teal process on purpose: a control
/// plane that restarts must not take production databases down with it.
/// </summary>
public sealed partial class ManagedPostgres(PostgresEngineCatalog catalog)
{
    private const string StateFileName = "teal-instance.json";

    /// <summary>Settings every managed server gets; the spec's parameters override them.</summary>
    public static IReadOnlyDictionary<string, string> BaseParameters { get; } = new Dictionary<string, string>
    {
        // Clients and Teal's sessions reach the server over TCP. Socket paths under a long data dir
        // would exceed the 107-byte limit, and a socket dir owned by another user is a permission
        // trap, so a server gets no socket file but an abstract one (LocalLogin).
        ["unix_socket_directories"] = "''",
        // Blue/green needs logical decoding on both sides (green becomes the publisher after a
        // switchover, for switchback).
        ["wal_level"] = "logical",
        ["max_wal_senders"] = "20",
        ["max_replication_slots"] = "20",
        ["max_logical_replication_workers"] = "8",
        ["max_worker_processes"] = "16",
        ["logging_collector"] = "off",
        ["log_line_prefix"] = "'%m [%p] %q%u@%d '",
    };

    private string? OsUser => ProcessRunner.IsRoot ? catalog.Options.OsUser : null;

    /// <summary>Runs initdb, writes the settings and starts the server.</summary>
    public async Task<ManagedPostgresServer> CreateAsync(ManagedPostgresSpec spec, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        // They become lines of teal.conf: refused before anything is made.
        ServerParameters.Validate(spec.Parameters, "--parameter", PostgresEngine.SettingNames);
        foreach (var (name, value) in spec.Parameters)
        {
            if (value.StartsWith('\'') && !QuotedValue().IsMatch(value))
            {
                throw new TealException("parameter.invalid-value", $"--parameter: the value of {name} opens a quote it does not close", "give the value without quotes (Teal quotes it), or as one complete 'quoted string'");
            }
        }

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
            // initdb reads the superuser's password from a file (never argv): 0600 from its
            // creation, given to the server's OS user, deleted as soon as initdb is done.
            var pwfile = Path.Combine(directory, ".pwfile");
            ProcessResult initdb;
            try
            {
                PrivateFile.WriteNew(pwfile, spec.Password + "\n");
                await ChownAsync(pwfile, cancellationToken);
                initdb = await RunAsync(
                    Path.Combine(engine.BinDirectory, "initdb"),
                    ["-D", Path.Combine(directory, "data"), "-U", spec.SuperUser, "--pwfile", pwfile, "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale"],
                    TimeSpan.FromMinutes(2),
                    cancellationToken);
            }
            finally
            {
                File.Delete(pwfile);
            }

            if (!initdb.Succeeded)
            {
                throw new TealException("instance.initdb-failed", $"initdb failed: {initdb.Tail()}", "see the message above; the directory was removed");
            }

            var port = spec.Port ?? FreePort();
            var server = new ManagedPostgresServer(directory, engine.Version, engine.BinDirectory, port, spec.ListenAddress, spec.SuperUser, OsUser);
            await WriteSettingsAsync(server, spec.Parameters, cancellationToken);
            await SaveStateAsync(server, cancellationToken);
            return await StartWithPortRetryAsync(server, spec.Port is null, spec.Parameters, cancellationToken);
        }
        catch
        {
            // Nothing half-made is left behind: a failed create removes what it wrote.
            await RemoveDirectoryAsync(directory);
            throw;
        }
    }

    /// <summary>Reads a managed server's description from its directory.</summary>
    public static Task<ManagedPostgresServer> LoadAsync(string directory, CancellationToken cancellationToken) =>
        LocalServers.LoadStateAsync<ManagedPostgresServer>(directory, StateFileName, "Teal-managed server", cancellationToken);

    public async Task StartAsync(ManagedPostgresServer server, CancellationToken cancellationToken)
    {
        var result = await RunAsync(
            Path.Combine(server.BinDirectory, "pg_ctl"),
            ["-D", server.DataDirectory, "-l", server.LogFile, "-w", "-t", "60", "start"],
            TimeSpan.FromSeconds(90),
            cancellationToken);
        if (!result.Succeeded)
        {
            throw new TealException(
                "instance.start-failed",
                $"PostgreSQL {server.Version} in {server.Directory} did not start: {LastLogLines(server)}",
                $"see {server.LogFile}");
        }
    }

    /// <summary>Stops the server; <paramref name="immediate"/> skips the shutdown checkpoint.</summary>
    public async Task StopAsync(ManagedPostgresServer server, bool immediate, CancellationToken cancellationToken)
    {
        if (!await IsRunningAsync(server, cancellationToken))
        {
            return;
        }

        var result = await RunAsync(
            Path.Combine(server.BinDirectory, "pg_ctl"),
            ["-D", server.DataDirectory, "-m", immediate ? "immediate" : "fast", "-w", "-t", "60", "stop"],
            TimeSpan.FromSeconds(90),
            cancellationToken);
        if (!result.Succeeded && await IsRunningAsync(server, cancellationToken))
        {
            throw new TealException("instance.stop-failed", $"could not stop PostgreSQL in {server.Directory}: {result.Tail()}", $"see {server.LogFile}");
        }
    }

    public async Task<bool> IsRunningAsync(ManagedPostgresServer server, CancellationToken cancellationToken)
    {
        if (!File.Exists(Path.Combine(server.DataDirectory, "postmaster.pid")))
        {
            return false;
        }

        // pg_ctl status exits 0 when running, 3 when not, 4 when the directory is not accessible.
        var result = await RunAsync(Path.Combine(server.BinDirectory, "pg_ctl"), ["-D", server.DataDirectory, "status"], TimeSpan.FromSeconds(10), cancellationToken);
        return result.ExitCode == 0;
    }

    /// <summary>Stops the server (immediately) and deletes its directory.</summary>
    public async Task RemoveAsync(ManagedPostgresServer server, CancellationToken cancellationToken)
    {
        await StopAsync(server, immediate: true, cancellationToken);
        await RemoveDirectoryAsync(server.Directory);
    }

    /// <inheritdoc cref="LocalServers.FreePort"/>
    public static int FreePort() => LocalServers.FreePort();

    /// <inheritdoc cref="LocalServers.GeneratePassword"/>
    public static string GeneratePassword() => LocalServers.GeneratePassword();

    private async Task<ManagedPostgresServer> StartWithPortRetryAsync(ManagedPostgresServer server, bool portIsOurs, IReadOnlyDictionary<string, string> parameters, CancellationToken cancellationToken)
    {
        // A free port can be taken between the check and the server's bind (tests run many
        // servers in parallel); when we chose the port, choose another and try again.
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await StartAsync(server, cancellationToken);
                return server;
            }
            catch (TealException) when (portIsOurs && attempt < 5 && LastLogLines(server).Contains("could not bind", StringComparison.OrdinalIgnoreCase))
            {
                server = server with { Port = FreePort() };
                await WriteSettingsAsync(server, parameters, cancellationToken);
                await SaveStateAsync(server, cancellationToken);
            }
        }
    }

    private async Task WriteSettingsAsync(ManagedPostgresServer server, IReadOnlyDictionary<string, string> parameters, CancellationToken cancellationToken)
    {
        var settings = new Dictionary<string, string>(BaseParameters)
        {
            ["listen_addresses"] = $"'{server.ListenAddress}'",
            ["port"] = server.Port.ToString(CultureInfo.InvariantCulture),
        };
        settings["unix_socket_directories"] = $"'{LocalLogin.SocketDirectory}'";
        if (server.MajorVersion >= LocalLogin.AllRolesMajorVersion)
        {
            await LocalLogin.MapTealAsync(Path.Combine(server.DataDirectory, "pg_ident.conf"), cancellationToken);
        }

        foreach (var (k, v) in parameters)
        {
            settings[k] = QuoteSetting(v);
        }

        var text = new StringBuilder("# Written by Teal. Settings of this managed instance; ALTER SYSTEM overrides them.\n");
        foreach (var (k, v) in settings)
        {
            text.Append(k).Append(" = ").Append(v).Append('\n');
        }

        var teal = Path.Combine(server.DataDirectory, "teal.conf");
        await File.WriteAllTextAsync(teal, text.ToString(), cancellationToken);
        await ChownAsync(teal, cancellationToken);
        var conf = Path.Combine(server.DataDirectory, "postgresql.conf");
        var existing = await File.ReadAllTextAsync(conf, cancellationToken);
        if (!existing.Contains("include_if_exists = 'teal.conf'", StringComparison.Ordinal))
        {
            await File.AppendAllTextAsync(conf, "\ninclude_if_exists = 'teal.conf'\n", cancellationToken);
        }
    }

    /// <summary>
    /// Numbers, words and already-quoted values pass as they are; anything else is quoted, with
    /// quotes doubled and backslashes escaped (the configuration parser reads <c>\x</c> as an escape).
    /// </summary>
    private static string QuoteSetting(string value) =>
        value.Length > 0 && (value[0] == '\'' || value.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-'))
            ? value
            : "'" + value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("'", "''", StringComparison.Ordinal) + "'";

    /// <summary>One complete quoted string as postgresql.conf reads it ('' and backslash escapes inside).</summary>
    [System.Text.RegularExpressions.GeneratedRegex(@"^'(?:[^'\\]|''|\\.)*'$")]
    private static partial System.Text.RegularExpressions.Regex QuotedValue();

    private static Task SaveStateAsync(ManagedPostgresServer server, CancellationToken cancellationToken) =>
        LocalServers.SaveStateAsync(server.Directory, StateFileName, server, cancellationToken);

    private ServerUser Owner => new(OsUser, "PostgreSQL refuses to run as root, so Teal runs it as that user: put the data dir where it can reach (e.g. teal serve --data-dir /var/lib/teal), or set TEAL_OS_USER");

    private Task PrepareDirectoryAsync(string directory, CancellationToken cancellationToken) => Owner.PrepareDirectoryAsync(directory, cancellationToken);

    private Task ChownAsync(string path, CancellationToken cancellationToken) => Owner.GiveAsync(path, cancellationToken);

    private Task<ProcessResult> RunAsync(string program, IReadOnlyList<string> arguments, TimeSpan timeout, CancellationToken cancellationToken) =>
        Owner.RunAsync(program, arguments, timeout, cancellationToken);

    private static string LastLogLines(ManagedPostgresServer server)
    {
        try
        {
            var lines = File.ReadLines(server.LogFile).Where(l => l.Contains("FATAL", StringComparison.Ordinal) || l.Contains("ERROR", StringComparison.Ordinal) || l.Contains("LOG", StringComparison.Ordinal)).TakeLast(3);
            return string.Join(" | ", lines);
        }
        catch (IOException)
        {
            return "(no log)";
        }
    }

    private static Task RemoveDirectoryAsync(string directory) => LocalServers.RemoveDirectoryAsync(directory);
}
