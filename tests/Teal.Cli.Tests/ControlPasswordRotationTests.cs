using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Teal.Core.Deployments;
using Teal.Core.Secrets;
using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Cli.Tests;

/// <summary>
/// `teal instance rotate-password`: Teal's login on a server gets a new password and the
/// subscriptions that log in with it follow — forward replication before the switchover, reverse
/// replication after it — while the password appears in no output, event or state file.
/// </summary>
public sealed class ControlPasswordRotationTests : IAsyncLifetime
{
    private TealHost _teal = null!; // Set in InitializeAsync, before any test runs.
    private PostgresServer _blue = null!; // Set in InitializeAsync.

    public async Task InitializeAsync()
    {
        _blue = await PostgresServer.StartAsync("15");
        _teal = await TealHost.StartAsync();
        await _blue.ExecuteAsync("CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g");
        (await Run("instance", "add", "app", "--connection", _blue.Uri())).ExitCode.ShouldBe(0);
    }

    public async Task DisposeAsync()
    {
        await _teal.DisposeAsync();
        await _blue.DisposeAsync();
    }

    [Fact]
    public async Task RotatePassword_ForwardThenReverseReplicationFollow_PasswordShownNowhere()
    {
        (await Run("create", "rot", "--source", "app", "--wait")).ExitCode.ShouldBe(0);
        var green = (await _teal.State.ListDeploymentsAsync(default)).ShouldHaveSingleItem().Green;
        var before = ControlPassword("app");
        var outputs = new StringBuilder();

        var rotated = await Run("instance", "rotate-password", "app");

        rotated.ExitCode.ShouldBe(0, rotated.ToString());
        rotated.Stdout.ShouldContain("replication followed it in: rot");
        outputs.Append(rotated);
        var first = ControlPassword("app");
        first.ShouldNotBe(before);
        // The walsender that was running keeps its session: end it, so the subscription must log in again.
        await TerminateWalSendersAsync("app");
        await ExecuteAsTealAsync("app", "INSERT INTO items VALUES (1001, 'after the first rotation')");
        await ServerWait.UntilAsync(async () => await ScalarAsTealAsync<long>(green, "SELECT count(*) FROM items WHERE id = 1001") == 1, "green applies a row written after the rotation");

        // The guardrails want healthy replication; the walsender ended above may leave one round STOPPED.
        await ServerWait.UntilAsync(async () => (await _teal.State.FindDeploymentAsync("rot", default))?.Replication.State == Teal.Core.Deployments.ReplicationState.Replicating, "replication is healthy again after the rotation");
        var switched = await Run("switchover", "rot", "--wait");
        switched.ExitCode.ShouldBe(0, switched.ToString());
        // "app" is now green's server, the publisher of reverse replication to "app-old1".
        var again = await Run("instance", "rotate-password", "app", "--output", "json");
        again.ExitCode.ShouldBe(0, again.ToString());
        outputs.Append(again);
        var second = ControlPassword("app");
        second.ShouldNotBe(first);
        await TerminateWalSendersAsync("app");
        await ExecuteAsTealAsync("app", "INSERT INTO items VALUES (1002, 'after the second rotation')");
        await ServerWait.UntilAsync(async () => await ScalarAsTealAsync<long>("app-old1", "SELECT count(*) FROM items WHERE id = 1002") == 1, "the old blue applies a row written on production after the rotation");

        outputs.Append(await Run("events", "--output", "json")).Append(await Run("show", "rot", "--output", "json")).Append(await Run("instance", "list", "--output", "json"));
        foreach (var password in new[] { first, second })
        {
            outputs.ToString().ShouldNotContain(password);
            foreach (var file in Directory.EnumerateFiles(_teal.DataDirectory).Where(f => Path.GetFileName(f) is not ("secrets.json" or "teal.lock")))
            {
                (await ReadSharedAsync(file)).ShouldNotContain(password, customMessage: file);
            }
        }
    }

    [Fact]
    public async Task RotatePassword_GreenWithManagedReader_ReaderStreamsAgainAfterReconnecting_PasswordShownNowhere()
    {
        (await Run("create", "rot", "--source", "app", "--target-readers", "1", "--wait")).ExitCode.ShouldBe(0);
        var green = (await _teal.State.ListDeploymentsAsync(default)).ShouldHaveSingleItem().Green;
        var reader = (await _teal.State.GetInstanceAsync($"{green}-r1", default))!;
        var before = ControlPassword(green);

        var rotated = await Run("instance", "rotate-password", green);

        rotated.ExitCode.ShouldBe(0, rotated.ToString());
        var after = ControlPassword(green);
        after.ShouldNotBe(before);
        // Teal's login on the reader is green's role, replayed: Teal's secret for it follows.
        await ServerWait.UntilAsync(async () => await TryScalarAsTealAsync(reader.Name) == 1, "Teal logs in to the reader with the new password");
        ControlPassword(reader.Name).ShouldBe(after);
        // The walreceiver kept its session; end it on green, so the reader must log in again.
        (await ScalarAsTealAsync<long>(green, $"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_replication WHERE application_name = '{reader.ReplicationSlot}'")).ShouldBe(1);
        await ExecuteAsTealAsync("app", "INSERT INTO items VALUES (2001, 'after the rotation')");
        await ServerWait.UntilAsync(async () => await ScalarAsTealAsync<long>(reader.Name, "SELECT count(*) FROM items WHERE id = 2001") == 1, "the reader streams a row written after the rotation");
        (await ScalarAsTealAsync<string>(green, $"SELECT state FROM pg_stat_replication WHERE application_name = '{reader.ReplicationSlot}'")).ShouldBe("streaming");

        var outputs = new StringBuilder().Append(rotated).Append(await Run("events", "--output", "json")).Append(await Run("show", "rot", "--output", "json")).Append(await Run("instance", "list", "--output", "json"));
        outputs.ToString().ShouldNotContain(after);
        foreach (var file in Directory.EnumerateFiles(_teal.DataDirectory).Where(f => Path.GetFileName(f) is not ("secrets.json" or "teal.lock")))
        {
            (await ReadSharedAsync(file)).ShouldNotContain(after, customMessage: file);
        }

        // The reader's settings name its passfile, never the password; its server log has none either.
        foreach (var file in Directory.EnumerateFiles(reader.Managed!.Directory, "*", SearchOption.AllDirectories).Where(f => !f.EndsWith(".pgpass", StringComparison.Ordinal) && (f.EndsWith(".conf", StringComparison.Ordinal) || f.EndsWith(".log", StringComparison.Ordinal))))
        {
            (await ReadSharedAsync(file)).ShouldNotContain(after, customMessage: file);
        }
    }

    /// <summary>1 when Teal's login on the instance works, null when it is refused.</summary>
    private async Task<int?> TryScalarAsTealAsync(string instance)
    {
        try
        {
            return await ScalarAsTealAsync<int>(instance, "SELECT 1");
        }
        catch (PostgresException)
        {
            return null;
        }
    }

    [Fact]
    public async Task RotatePassword_BeforeTealLoggedIn_RefusedWithHint()
    {
        var run = await Run("instance", "rotate-password", "app");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldBe("error: Teal has no login of its own on 'app' yet: there is no password to rotate");
    }

    private string ControlPassword(string instance)
    {
        var found = _teal.State.GetInstanceAsync(instance, default).GetAwaiter().GetResult()!;
        return _teal.Services.GetRequiredService<ISecretStore>().Read(DeploymentLinks.ControlSecretReference(found))!;
    }

    private async Task TerminateWalSendersAsync(string instance) =>
        await ScalarAsTealAsync<long>(instance, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_replication");

    private async Task ExecuteAsTealAsync(string instance, string sql)
    {
        await using var conn = await OpenAsTealAsync(instance);
        await using var command = new NpgsqlCommand("SET default_transaction_read_only = off; " + sql, conn);
        await command.ExecuteNonQueryAsync();
    }

    private async Task<T> ScalarAsTealAsync<T>(string instance, string sql)
    {
        await using var conn = await OpenAsTealAsync(instance);
        await using var command = new NpgsqlCommand(sql, conn);
        return (T)(await command.ExecuteScalarAsync())!;
    }

    private async Task<NpgsqlConnection> OpenAsTealAsync(string instance)
    {
        var url = (await Run("instance", "url", instance, "--as-teal")).Stdout.Trim();
        var conn = new NpgsqlConnection(Teal.Postgres.Connections.PostgresConnections.Builder(Teal.Postgres.Connections.ConnectionStrings.Parse(url), pooling: false).ConnectionString);
        await conn.OpenAsync();
        return conn;
    }

    private static async Task<string> ReadSharedAsync(string file)
    {
        // The state store is open in the server: read it shared, as bytes (SQLite pages).
        await using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var reader = new StreamReader(stream, Encoding.Latin1);
        return await reader.ReadToEndAsync();
    }

    private Task<CliRun> Run(params string[] args) =>
        CliRun.RunAsync([.. args, "--server", _teal.Url.ToString(), "--data-dir", _teal.DataDirectory]);
}
