using System.Net.Http.Json;
using System.Text.Json;
using Teal.Postgres.Instances;
using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Cli.Tests;

/// <summary>
/// More <c>teal create</c> refusals from the prerequisite checks, each on its own real server so
/// the shared blue stays clean: exit code 1, a message naming the problem, the fix in the hint,
/// and nothing created — no deployment, no managed green, nothing of Teal's on blue.
/// </summary>
public sealed class CreateRefusalTests : IAsyncLifetime
{
    private TealHost _teal = null!; // Set in InitializeAsync, before any test runs.

    public async Task InitializeAsync() => _teal = await TealHost.StartAsync();

    public async Task DisposeAsync() => await _teal.DisposeAsync();

    [Fact]
    public async Task TableWithoutPrimaryKey_RefusedNamingTheTableAndTheFix()
    {
        await using var blue = await PostgresServer.StartAsync("15");
        await blue.ExecuteAsync("CREATE TABLE notes (body text); CREATE TABLE keyed (id int PRIMARY KEY)");
        await AddAsync("blue", blue.Uri());

        var run = await Run("create", "orders", "--source", "blue");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldContain("public.notes");
        run.ErrorLines[0].ShouldNotContain("keyed");
        run.ErrorLines[1].ShouldContain("ALTER TABLE \"public\".\"notes\" REPLICA IDENTITY FULL;");
        await ShouldHaveCreatedNothingAsync(blue);
    }

    [Fact]
    public async Task WalLevelSetButPendingRestart_RefusedAskingForARestart()
    {
        await using var blue = await PostgresServer.StartAsync("15", new Dictionary<string, string> { ["wal_level"] = "replica" });
        await blue.ExecuteAsync("ALTER SYSTEM SET wal_level = logical");
        await blue.ExecuteAsync("SELECT pg_reload_conf()");
        await AddAsync("blue", blue.Uri());

        var run = await Run("create", "orders", "--source", "blue");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldContain("pending_restart");
        run.ErrorLines[1].ShouldContain("restart blue");
        await ShouldHaveCreatedNothingAsync(blue);
    }

    [Fact]
    public async Task NonEmptyExternalGreen_RefusedAndGreenUntouched()
    {
        await using var blue = await PostgresServer.StartAsync("15");
        await using var green = await PostgresServer.StartAsync("17");
        await green.ExecuteAsync("CREATE TABLE already_here (id int PRIMARY KEY)");
        await AddAsync("blue", blue.Uri());

        var run = await Run("create", "orders", "--source", "blue", "--target-connection", green.Uri());

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldContain("is not empty");
        run.ErrorLines[0].ShouldContain("already_here");
        await ShouldHaveCreatedNothingAsync(blue);
        (await green.ScalarAsync<long>("SELECT count(*) FROM pg_subscription")).ShouldBe(0);
    }

    [Fact]
    public async Task BlueAlreadyPublishing_RefusedNamingThePublication()
    {
        await using var blue = await PostgresServer.StartAsync("15");
        await blue.ExecuteAsync("CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION to_warehouse FOR TABLE t");
        await AddAsync("blue", blue.Uri());

        var run = await Run("create", "orders", "--source", "blue");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldContain("publication to_warehouse");
        run.ErrorLines[1].ShouldContain("DROP PUBLICATION");
        await ShouldHaveCreatedNothingAsync(blue);
        (await blue.ScalarAsync<long>("SELECT count(*) FROM pg_publication")).ShouldBe(1);
    }

    [Fact]
    public async Task BlueNewerThanTheClientTools_RefusedNamingTheToolBeforeGreenIsBuilt()
    {
        // This machine has PostgreSQL 15's pg_dump only (ENVIRONMENT.md): it refuses to dump a 17.
        await using var blue = await PostgresServer.StartAsync("17");
        await blue.ExecuteAsync("CREATE TABLE t (id int PRIMARY KEY)");
        await AddAsync("blue", blue.Uri());

        var run = await Run("create", "orders", "--source", "blue", "--target-engine-version", "17");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldContain("blue runs PostgreSQL 17");
        run.ErrorLines[0].ShouldContain("pg_dump and pg_dumpall");
        run.ErrorLines[0].ShouldContain("PostgreSQL 15's");
        run.ErrorLines[1].ShouldContain("postgresql-client-17");
        await ShouldHaveCreatedNothingAsync(blue);
        (await _teal.State.ListInstancesAsync(default)).Select(i => i.Name).ShouldBe(["blue"]);
    }

    [Fact]
    public async Task ManagedGreenOlderThanBlue_RefusedWithEveryFailureBeforeGreenIsBuilt()
    {
        await using var blue = await PostgresServer.StartAsync("16");
        await AddAsync("blue", blue.Uri());

        var run = await Run("create", "orders", "--source", "blue", "--target-engine-version", "15");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldContain("2 checks failed");
        run.ErrorLines[0].ShouldContain("green.version: green would run PostgreSQL 15.");
        run.ErrorLines[0].ShouldContain("teal.client-tools: blue runs PostgreSQL 16");
        await ShouldHaveCreatedNothingAsync(blue);
    }

    [Fact]
    public async Task ExternalGreenPasswordFromFile_ReachesGreen_RefusedAsNotEmpty()
    {
        await using var blue = await PostgresServer.StartAsync("15");
        await using var green = await PostgresServer.StartAsync("17");
        await green.ExecuteAsync("CREATE TABLE already_here (id int PRIMARY KEY)");
        await AddAsync("blue", blue.Uri());
        var file = Path.Combine(TestDirectories.NewDirectory("pw"), "green.pw");
        await File.WriteAllTextAsync(file, green.Password + "\n");

        var run = await Run("create", "orders", "--source", "blue", "--target-connection", $"postgresql://{green.User}@{green.Host}:{green.Port}/postgres", "--target-password-file", file);
        var managed = await Run("create", "orders", "--source", "blue", "--target-password-file", file);

        // Refused for what green holds: so Teal logged in to green with the password from the file.
        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldContain("already_here");
        managed.ExitCode.ShouldBe(1, managed.ToString());
        managed.ErrorLines[0].ShouldContain("goes with --target-connection");
        await ShouldHaveCreatedNothingAsync(blue);
    }

    [Fact]
    public async Task FailureAfterGreenWasBuilt_RemovesTheManagedGreenAndTealsObjects()
    {
        // A table owned by a role green does not have, with role copy off: the schema copy fails
        // after the managed green was built and the create accepted.
        await using var blue = await PostgresServer.StartAsync("15");
        await blue.ExecuteAsync("CREATE ROLE app_owner; CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t OWNER TO app_owner");
        await AddAsync("blue", blue.Uri());
        using var client = _teal.Client();

        using var response = await client.PostAsJsonAsync("/api/deployments", new { name = "orders", source = "blue", copyRoles = false });
        response.IsSuccessStatusCode.ShouldBeTrue(await response.Content.ReadAsStringAsync());
        var deployment = await WaitUntilSettledAsync("orders");

        deployment.GetProperty("status").GetString().ShouldBe("INVALID_CONFIGURATION");
        var reason = deployment.GetProperty("statusReason").GetString();
        reason.ShouldNotBeNull().ShouldContain("app_owner");
        reason.ShouldContain("managed green");
        (await _teal.State.ListInstancesAsync(default)).Select(i => i.Name).ShouldBe(["blue"]);
        Directory.EnumerateFileSystemEntries(Path.Combine(_teal.DataDirectory, "instances")).ShouldBeEmpty();
        (await blue.ScalarAsync<long>("SELECT count(*) FROM pg_replication_slots")).ShouldBe(0);
        (await blue.ScalarAsync<long>("SELECT count(*) FROM pg_publication WHERE pubname LIKE 'teal%'")).ShouldBe(0);

        var deleted = await Run("delete", "orders", "--delete-target");
        deleted.ExitCode.ShouldBe(0, deleted.ToString());
        (await Run("list", "--output", "json")).Stdout.Trim().ShouldBe("[]");
    }

    [Fact]
    public async Task UnreachableBlue_AddRefusedAndNothingStored()
    {
        var port = ManagedPostgres.FreePort();

        var run = await Run("instance", "add", "blue", "--connection", $"postgresql://app:Secret-Pw-123@127.0.0.1:{port}/app");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldContain("cannot connect");
        run.ErrorLines[1].ShouldContain("host and port");
        run.Stderr.ShouldNotContain("Secret-Pw-123");
        (await _teal.State.ListInstancesAsync(default)).ShouldBeEmpty();
    }

    private async Task AddAsync(string name, string uri) => (await Run("instance", "add", name, "--connection", uri)).ExitCode.ShouldBe(0);

    /// <summary>No deployment, no managed green directory, and no Teal object (publication, slot, schema) on blue.</summary>
    private async Task ShouldHaveCreatedNothingAsync(PostgresServer blue)
    {
        (await Run("list", "--output", "json")).Stdout.Trim().ShouldBe("[]");
        Directory.EnumerateFileSystemEntries(Path.Combine(_teal.DataDirectory, "instances")).ShouldBeEmpty();
        (await blue.ScalarAsync<long>("SELECT count(*) FROM pg_publication WHERE pubname LIKE 'teal%'")).ShouldBe(0);
        (await blue.ScalarAsync<long>("SELECT count(*) FROM pg_replication_slots")).ShouldBe(0);
        (await blue.ScalarAsync<long>("SELECT count(*) FROM pg_namespace WHERE nspname = 'teal'")).ShouldBe(0);
    }

    private async Task<JsonElement> WaitUntilSettledAsync(string name)
    {
        for (var attempt = 0; attempt < 600; attempt++)
        {
            var shown = await Run("show", name, "--output", "json");
            var deployment = JsonDocument.Parse(shown.Stdout).RootElement;
            if (deployment.GetProperty("status").GetString() != "PROVISIONING")
            {
                return deployment;
            }

            await Task.Delay(500);
        }

        throw new TimeoutException($"deployment {name} stayed PROVISIONING");
    }

    private Task<CliRun> Run(params string[] args) =>
        CliRun.RunAsync([.. args, "--server", _teal.Url.ToString(), "--data-dir", _teal.DataDirectory]);
}
