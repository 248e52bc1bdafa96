using System.Globalization;
using System.Text.RegularExpressions;
using Npgsql;
using Teal.Core.Engines;
using Teal.Processes;
using Teal.Postgres.Instances;

namespace Teal.Bench.Replication;

internal sealed record BenchOptions(int Scale, int Clients, int Seconds)
{
    /// <summary>Rows of the large table (about 150 bytes each: 20 M is about 3 GB).</summary>
    public long LargeRows { get; init; } = 20_000_000;

    /// <summary>Sessions of Teal's parallel copy (the native copy runs in the same run for comparison).</summary>
    public int CopyParallelism { get; init; } = Math.Clamp(Environment.ProcessorCount, 2, 8);

    public static BenchOptions Parse(string[] args)
    {
        int Value(string name, int fallback)
        {
            var i = Array.IndexOf(args, name);
            return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], CultureInfo.InvariantCulture) : fallback;
        }

        var rows = Array.IndexOf(args, "--large-rows");
        return new BenchOptions(Value("--scale", 10), Value("--clients", 8), Value("--seconds", 60))
        {
            LargeRows = rows >= 0 && rows + 1 < args.Length ? long.Parse(args[rows + 1], CultureInfo.InvariantCulture) : 20_000_000,
            CopyParallelism = Value("--copy-parallelism", Math.Clamp(Environment.ProcessorCount, 2, 8)),
        };
    }
}

/// <summary>One local server of the benchmark.</summary>
internal sealed class BenchServer(ManagedPostgresServer server, string password)
{
    public string Version => server.Version;

    public ConnectionInfo Connection(string database) => new(server.ListenAddress, server.Port, server.SuperUser, password, database);

    public ManagedPostgresServer Server => server;

    public string ConnectionString(string database) => new NpgsqlConnectionStringBuilder
    {
        Host = server.ListenAddress,
        Port = server.Port,
        Username = server.SuperUser,
        Password = password,
        Database = database,
        Pooling = false,
        CommandTimeout = 0,
    }.ConnectionString;

    public async Task<NpgsqlConnection> OpenAsync(string database)
    {
        var conn = new NpgsqlConnection(ConnectionString(database));
        await conn.OpenAsync();
        return conn;
    }

    public async Task ExecuteAsync(string sql, string database = "postgres")
    {
        await using var conn = await OpenAsync(database);
        await using var cmd = new NpgsqlCommand(sql, conn);
        await cmd.ExecuteNonQueryAsync();
    }

    /// <summary>Runs pgbench against this server; the password goes through the environment.</summary>
    public async Task<ProcessResult> RunToolAsync(string tool, IReadOnlyList<string> args)
    {
        var result = await ProcessRunner.RunAsync(
            new ProcessSpec(tool, ["-h", server.ListenAddress, "-p", server.Port.ToString(CultureInfo.InvariantCulture), "-U", server.SuperUser, .. args])
            {
                Environment = new Dictionary<string, string> { ["PGPASSWORD"] = password },
                Timeout = TimeSpan.FromMinutes(30),
            },
            CancellationToken.None);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException($"{Path.GetFileName(tool)} failed: {result.Tail()}");
        }

        return result;
    }
}

/// <summary>Blue 15 and green 17 in a scratch directory, removed at the end.</summary>
internal sealed partial class BenchServers(ManagedPostgres managed, BenchServer blue, BenchServer green, BenchServer nativeGreen, string directory) : IAsyncDisposable
{
    public BenchServer Blue => blue;

    /// <summary>Green of the parallel copy.</summary>
    public BenchServer Green => green;

    /// <summary>Green of the native (subscription) copy, in the same run.</summary>
    public BenchServer NativeGreen => nativeGreen;

    private static readonly Dictionary<string, string> Parameters = new()
    {
        ["shared_buffers"] = "256MB",
        ["max_connections"] = "100",
        ["max_wal_size"] = "2GB",
    };

    public static async Task<BenchServers> StartAsync(ManagedPostgres managed, CancellationToken cancellationToken)
    {
        var directory = Path.Combine("/tmp/teal-bench", $"run-{Environment.ProcessId}");
        Directory.CreateDirectory(directory);
        File.SetUnixFileMode("/tmp/teal-bench", (UnixFileMode)0b111_101_101);
        File.SetUnixFileMode(directory, (UnixFileMode)0b111_101_101);
        var blue = StartOneAsync(managed, Path.Combine(directory, "blue"), "15", cancellationToken);
        var green = StartOneAsync(managed, Path.Combine(directory, "green"), "17", cancellationToken);
        var nativeGreen = StartOneAsync(managed, Path.Combine(directory, "green-native"), "17", cancellationToken);
        await Task.WhenAll(blue, green, nativeGreen);
        return new BenchServers(managed, await blue, await green, await nativeGreen, directory);
    }

    private static async Task<BenchServer> StartOneAsync(ManagedPostgres managed, string directory, string version, CancellationToken cancellationToken)
    {
        Directory.CreateDirectory(directory);
        File.SetUnixFileMode(directory, (UnixFileMode)0b111_101_101);
        var password = ManagedPostgres.GeneratePassword();
        var server = await managed.CreateAsync(new ManagedPostgresSpec(directory, version, password) { Parameters = Parameters }, cancellationToken);
        return new BenchServer(server, password);
    }

    public static double Percentile(List<double> values, double p)
    {
        if (values.Count == 0)
        {
            return 0;
        }

        var sorted = values.Order().ToList();
        return Math.Round(sorted[(int)Math.Min(sorted.Count - 1, Math.Ceiling(p * sorted.Count) - 1)], 3);
    }

    public static double ParseTps(string output)
    {
        var m = TpsPattern().Match(output);
        return m.Success ? double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : 0;
    }

    public async ValueTask DisposeAsync()
    {
        await managed.RemoveAsync(blue.Server, CancellationToken.None);
        await managed.RemoveAsync(green.Server, CancellationToken.None);
        await managed.RemoveAsync(nativeGreen.Server, CancellationToken.None);
        try
        {
            Directory.Delete(directory, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: the servers are gone, a leftover directory is harmless.
        }
    }

    [GeneratedRegex(@"tps = ([0-9.]+)")]
    private static partial Regex TpsPattern();
}
