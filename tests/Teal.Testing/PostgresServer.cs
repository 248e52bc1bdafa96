using Npgsql;
using Teal.Postgres.Instances;

namespace Teal.Testing;

/// <summary>
/// A real PostgreSQL server for a test: started from local binaries on a free port in its own
/// directory, with <c>wal_level=logical</c>, removed on dispose.
/// </summary>
public sealed class PostgresServer : IAsyncDisposable
{
    /// <summary>
    /// Settings for test servers: durability is traded for speed (nothing here survives a
    /// machine crash anyway); everything replication-related stays as in production.
    /// </summary>
    public static IReadOnlyDictionary<string, string> TestParameters { get; } = new Dictionary<string, string>
    {
        ["fsync"] = "off",
        ["full_page_writes"] = "off",
        ["shared_buffers"] = "64MB",
        ["max_connections"] = "200",
    };

    private PostgresServer(ManagedPostgresServer server, string password)
    {
        Server = server;
        Password = password;
        ControlPassword = password;
    }

    public ManagedPostgresServer Server { get; }

    /// <summary>The superuser's password (generated per server).</summary>
    public string Password { get; }

    public int Port => Server.Port;

    public string Host => Server.ListenAddress;

    public string Version => Server.Version;

    public int MajorVersion => Server.MajorVersion;

    public string User => Server.SuperUser;

    /// <summary>The server's abstract Unix socket (<see cref="LocalLogin"/>; PostgreSQL 16+), as .NET connects to it.</summary>
    public string LocalSocket => LocalLogin.SocketPath(LocalLogin.SocketDirectory, Port)!;

    /// <summary>
    /// Sends a startup packet as <paramref name="user"/> over <see cref="LocalSocket"/> and returns
    /// the code of the server's first Authentication message (0: admitted, 10: SCRAM asked).
    /// </summary>
    public async Task<int> LocalStartupAsync(string user, string database)
    {
        using var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
        await socket.ConnectAsync(new System.Net.Sockets.UnixDomainSocketEndPoint(LocalSocket));
        var body = System.Text.Encoding.UTF8.GetBytes($"user\0{user}\0database\0{database}\0\0");
        var packet = new byte[8 + body.Length];
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(packet, packet.Length);
        System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(packet.AsSpan(4), 196608);
        body.CopyTo(packet, 8);
        await socket.SendAsync(packet);
        var header = new byte[9];
        for (var read = 0; read < header.Length;)
        {
            var n = await socket.ReceiveAsync(header.AsMemory(read));
            if (n == 0)
            {
                throw new InvalidOperationException("the server closed its local socket before answering the startup packet");
            }

            read += n;
        }

        return header[0] == (byte)'R'
            ? System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(5))
            : throw new InvalidOperationException($"the server answered the startup packet with '{(char)header[0]}', not an Authentication message");
    }

    /// <summary>
    /// Puts <see cref="LocalLogin.HbaRule"/> first in the server's pg_hba.conf, as Teal's fence of
    /// a server it provisioned does, until disposed (then the file is put back and reloaded).
    /// </summary>
    public async Task<IAsyncDisposable> AdmitTealsOsUserLocallyAsync()
    {
        var file = Path.Combine(Server.DataDirectory, "pg_hba.conf");
        var original = await File.ReadAllTextAsync(file);
        await File.WriteAllTextAsync(file, LocalLogin.HbaRule + "\n" + original);
        await ExecuteAsync("SELECT pg_reload_conf()");
        for (var attempt = 0; await LocalStartupAsync(User, "postgres") != 0; attempt++)
        {
            if (attempt == 100)
            {
                throw new InvalidOperationException("the server's reload never admitted Teal's OS user over its local socket");
            }

            await Task.Delay(20);
        }

        return new Restore(async () =>
        {
            await File.WriteAllTextAsync(file, original);
            await ExecuteAsync("SELECT pg_reload_conf()");
        });
    }

    private sealed class Restore(Func<Task> restore) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync() => await restore();
    }

    public static async Task<PostgresServer> StartAsync(string version, IReadOnlyDictionary<string, string>? parameters = null, CancellationToken cancellationToken = default)
    {
        var settings = new Dictionary<string, string>(TestParameters);
        foreach (var (k, v) in parameters ?? new Dictionary<string, string>())
        {
            settings[k] = v;
        }

        var password = ManagedPostgres.GeneratePassword();
        var spec = new ManagedPostgresSpec(TestDirectories.NewDirectory($"pg{version}"), version, password) { Parameters = settings };
        var server = await TestDirectories.Managed.CreateAsync(spec, cancellationToken);
        TestDirectories.Track(server);
        return new PostgresServer(server, password);
    }

    public string ConnectionString(string database = "postgres", string? user = null, string? password = null) =>
        new NpgsqlConnectionStringBuilder
        {
            Host = Host,
            Port = Port,
            Username = user ?? User,
            Password = password ?? Password,
            Database = database,
            // Tests open and drop databases freely; a pooled connection would keep them busy.
            Pooling = false,
            Timeout = 15,
            CommandTimeout = 120,
        }.ConnectionString;

    /// <summary>A libpq <c>key=value</c> string (for a subscription's CONNECTION).</summary>
    public string Conninfo(string database = "postgres") => Teal.Postgres.Connections.Libpq.Conninfo(Host, Port, User, Password, database);

    /// <summary>A libpq-style URI (for psql, pgbench and Teal's CLI).</summary>
    public string Uri(string database = "postgres") =>
        $"postgresql://{System.Uri.EscapeDataString(User)}:{System.Uri.EscapeDataString(Password)}@{Host}:{Port}/{System.Uri.EscapeDataString(database)}";

    /// <summary>
    /// Teal's login role on this server, which a fence leaves able to log in. Link tests give it
    /// the superuser's password; tests through <c>teal serve</c> set what Teal generated.
    /// </summary>
    public string ControlPassword { get; set; }

    /// <summary>
    /// Opens a session as the superuser, or, while a fence has taken the superuser's LOGIN, as
    /// Teal's login role: the test harness looks at a fenced server the way Teal does.
    /// </summary>
    public async Task<NpgsqlConnection> OpenAsync(string database = "postgres", CancellationToken cancellationToken = default)
    {
        var connection = new NpgsqlConnection(ConnectionString(database));
        try
        {
            await connection.OpenAsync(cancellationToken);
            return connection;
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.InvalidAuthorizationSpecification)
        {
            await connection.DisposeAsync();
        }

        // With Teal's session settings too, so the fence's read-only default does not apply.
        var control = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(ConnectionString(database, ControlRole, ControlPassword)) { Options = "-c default_transaction_read_only=off" }.ConnectionString);
        await control.OpenAsync(cancellationToken);
        return control;
    }

    /// <summary>The name of Teal's login role (see <see cref="ControlPassword"/>).</summary>
    public const string ControlRole = "teal_control";

    public async Task ExecuteAsync(string sql, string database = "postgres", CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(database, cancellationToken);
        await using var cmd = new NpgsqlCommand(sql, connection);
        await cmd.ExecuteNonQueryAsync(cancellationToken);
    }

    public async Task<T> ScalarAsync<T>(string sql, string database = "postgres", CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenAsync(database, cancellationToken);
        await using var cmd = new NpgsqlCommand(sql, connection);
        var value = await cmd.ExecuteScalarAsync(cancellationToken);
        return (T)Convert.ChangeType(value!, typeof(T), System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>Stops the server (for tests where a side goes away); <see cref="StartAgainAsync"/> brings it back.</summary>
    public Task StopAsync(CancellationToken cancellationToken = default) =>
        TestDirectories.Managed.StopAsync(Server, immediate: false, cancellationToken);

    public Task StartAgainAsync(CancellationToken cancellationToken = default) =>
        TestDirectories.Managed.StartAsync(Server, cancellationToken);

    public async ValueTask DisposeAsync()
    {
        NpgsqlConnection.ClearAllPools();
        await TestDirectories.Managed.RemoveAsync(Server, CancellationToken.None);
        TestDirectories.Untrack(Server);
    }
}
