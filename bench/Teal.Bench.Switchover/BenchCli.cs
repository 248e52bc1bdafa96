using System.Text.Json;
using Npgsql;
using Teal.Testing.Processes;

namespace Teal.Bench.Switchover;

/// <summary>
/// The tests' <see cref="TealCli"/> (the real <c>teal</c> CLI against one <c>teal serve</c>, as an
/// operator runs it) with what the bench needs on top: commands that must succeed, and parsed
/// <c>show</c> and <c>instance url</c> output.
/// </summary>
internal sealed class BenchCli(TealProcess server)
{
    private readonly TealCli _cli = new(server);

    /// <summary>The <c>teal serve</c> this CLI talks to (a <c>teal proxy</c> follows it).</summary>
    public TealProcess Server => server;

    /// <param name="environment">Extra variables for this command only: the PgBouncer admin password goes through <c>TEAL_PGBOUNCER_PASSWORD</c>, never the command line.</param>
    public Task<CliResult> RunAsync(IReadOnlyList<string> args, TimeSpan timeout, IReadOnlyDictionary<string, string>? environment = null) =>
        _cli.RunAsync(args, timeout, environment);

    public Task<CliResult> RunAsync(params string[] args) => RunAsync(args, TimeSpan.FromMinutes(5));

    /// <summary>Runs a command that must succeed (setup and cleanup): a failure stops the bench with the CLI's own words.</summary>
    public async Task<CliResult> MustAsync(IReadOnlyList<string> args, TimeSpan timeout, IReadOnlyDictionary<string, string>? environment = null)
    {
        var result = await RunAsync(args, timeout, environment);
        return result.ExitCode == 0 ? result : throw new InvalidOperationException($"teal {string.Join(' ', args)} failed: {result}");
    }

    public async Task<JsonElement> ShowAsync(string deployment)
    {
        var shown = await MustAsync(["show", deployment, "--output", "json"], TimeSpan.FromMinutes(1));
        return JsonDocument.Parse(shown.Stdout).RootElement.Clone();
    }

    /// <summary>Teal's superuser connection to an instance (libpq URI from <c>teal instance url</c>), to <paramref name="database"/>.</summary>
    public async Task<string> InstanceConnectionAsync(string instance, string database)
    {
        var url = await MustAsync(["instance", "url", instance], TimeSpan.FromMinutes(1));
        var info = Teal.Postgres.Connections.ConnectionStrings.Parse(url.Stdout.Trim());
        return new NpgsqlConnectionStringBuilder { Host = info.Host, Port = info.Port, Username = info.User, Password = info.Password, Database = database, Pooling = false }.ConnectionString;
    }
}
