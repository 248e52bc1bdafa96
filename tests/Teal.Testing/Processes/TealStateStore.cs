namespace Teal.Testing.Processes;

/// <summary>
/// A PostgreSQL state store for <c>teal serve</c> processes: a fresh database on one server this
/// test process shares among its tests, and one key file for every serve using it (as the
/// control-plane machines of one state store are given the same <c>state.key</c>). The password
/// travels in <c>TEAL_STATE_PASSWORD</c>, never in a command line.
/// </summary>
public sealed record TealStateStore(string Url, string Password, string KeyFile, string ConnectionString)
{
    /// <summary><c>TEAL_TEST_STATE=postgresql</c>: every <c>teal serve</c> a test starts uses a PostgreSQL state store.</summary>
    public static bool Requested => string.Equals(System.Environment.GetEnvironmentVariable("TEAL_TEST_STATE"), "postgresql", StringComparison.OrdinalIgnoreCase);

    private static readonly SemaphoreSlim Starting = new(1, 1);
    private static PostgresServer? _server;

    /// <summary>Reads the state database directly (what the tests check Teal stored).</summary>
    public async Task<T> ScalarAsync<T>(string sql)
    {
        await using var connection = new Npgsql.NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new Npgsql.NpgsqlCommand(sql, connection);
        return (T)(await command.ExecuteScalarAsync())!;
    }

    /// <summary>What <c>teal serve</c> reads to use this store.</summary>
    public IReadOnlyDictionary<string, string> Environment => new Dictionary<string, string>
    {
        ["TEAL_STATE"] = Url,
        ["TEAL_STATE_PASSWORD"] = Password,
        ["TEAL_STATE_KEY_FILE"] = KeyFile,
    };

    public static async Task<TealStateStore> NewPostgresAsync(CancellationToken cancellationToken = default)
    {
        var server = await ServerAsync(cancellationToken);
        var database = "teal_state_" + Guid.NewGuid().ToString("N")[..12];
        await server.ExecuteAsync($"CREATE DATABASE {database}", cancellationToken: cancellationToken);
        var keyFile = Path.Combine(TestDirectories.NewDirectory("statekey"), "state.key");
        return new TealStateStore($"postgresql://{Uri.EscapeDataString(server.User)}@{server.Host}:{server.Port}/{database}", server.Password, keyFile, server.ConnectionString(database));
    }

    /// <summary>The server holding every state database of this test process (stopped with its other servers at exit).</summary>
    private static async Task<PostgresServer> ServerAsync(CancellationToken cancellationToken)
    {
        await Starting.WaitAsync(cancellationToken);
        try
        {
            return _server ??= await PostgresServer.StartAsync("15", cancellationToken: cancellationToken);
        }
        finally
        {
            Starting.Release();
        }
    }
}
