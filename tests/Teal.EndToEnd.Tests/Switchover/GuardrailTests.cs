using System.Text.Json;
using Npgsql;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// One blue/green setup shared by the guardrail tests. While the deployment is still
/// PROVISIONING it records what <c>teal check</c> and <c>teal switchover</c> said, then waits for
/// AVAILABLE. Each test induces one failure for real, checks the refusal, and undoes it.
/// </summary>
public sealed class GuardrailScenario : IAsyncLifetime
{
    public BlueGreenScenario Scenario { get; private set; } = null!;

    public string StatusWhileProvisioning { get; private set; } = "";

    public CliResult CheckWhileProvisioning { get; private set; } = null!;

    public CliResult SwitchoverWhileProvisioning { get; private set; } = null!;

    public string StatusAfterRefusal { get; private set; } = "";

    /// <summary>Name of the managed green instance.</summary>
    public string Green { get; private set; } = "";

    public async Task InitializeAsync()
    {
        Scenario = await BlueGreenScenario.StartAsync();
        // Provisioning takes seconds; an open ACCESS EXCLUSIVE lock on a table on blue holds its
        // initial copy, so the deployment stays PROVISIONING while check and switchover run.
        await using (var locker = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(Scenario.Blue.ConnectionString(BlueGreenScenario.Database)) { Pooling = false }.ConnectionString))
        {
            await locker.OpenAsync();
            await using var transaction = await locker.BeginTransactionAsync();
            await using (var lockTable = new NpgsqlCommand("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE", locker, transaction))
            {
                await lockTable.ExecuteNonQueryAsync();
            }

            // No --wait: the deployment is PROVISIONING while green is made and the tables are copied.
            (await Scenario.Cli.RunAsync(["create", "upgrade", "--source", "app", "--target-engine-version", "17"], TimeSpan.FromMinutes(2))).ShouldSucceed();
            await Task.Delay(TimeSpan.FromSeconds(1));
            StatusWhileProvisioning = BlueGreenScenario.Status(await Scenario.ShowAsync());
            CheckWhileProvisioning = await Scenario.Cli.RunAsync("check", "upgrade", "--output", "json");
            SwitchoverWhileProvisioning = await Scenario.Cli.RunAsync("switchover", "upgrade");
            StatusAfterRefusal = BlueGreenScenario.Status(await Scenario.ShowAsync());
            await transaction.RollbackAsync();
        }

        var deployment = await Scenario.WaitForStatusAsync("upgrade", TimeSpan.FromMinutes(5), "AVAILABLE", "SWITCHOVER_IN_PROGRESS", "SWITCHOVER_COMPLETED", "SWITCHOVER_FAILED", "FAILED");
        BlueGreenScenario.Status(deployment).ShouldBe("AVAILABLE", deployment.ToString());
        Green = deployment.GetProperty("green").GetString()!;
        await Scenario.WaitForReplicationAsync("upgrade", TimeSpan.FromMinutes(2));
    }

    public async Task DisposeAsync() => await Scenario.DisposeAsync();
}

/// <summary>
/// PRODUCT.md §6: every guardrail made to fail for real — <c>teal check</c> names the failing
/// check with its message and hint (exit 1), <c>teal switchover</c> is refused (exit 1) and
/// nothing changes: the deployment stays AVAILABLE and blue stays writable.
/// </summary>
public sealed class GuardrailTests(GuardrailScenario fixture) : IClassFixture<GuardrailScenario>
{
    private BlueGreenScenario Scenario => fixture.Scenario;

    [Fact]
    public void WhileProvisioning_CheckAndSwitchoverAreRefused()
    {
        fixture.StatusWhileProvisioning.ShouldBe("PROVISIONING");
        var failed = FailedCheck(fixture.CheckWhileProvisioning, "deployment-available");
        failed.GetProperty("message").GetString()!.ShouldContain("PROVISIONING, not AVAILABLE");
        failed.GetProperty("hint").GetString()!.ShouldContain("wait until `teal show` says AVAILABLE");
        fixture.SwitchoverWhileProvisioning.ExitCode.ShouldBe(1, fixture.SwitchoverWhileProvisioning.ToString());
        fixture.StatusAfterRefusal.ShouldBe("PROVISIONING");
    }

    [Fact]
    public async Task SubscriptionDisabledOnGreen_ReplicationUnhealthy_Refused()
    {
        await WaitUntilCleanAsync();
        var subscription = await SubscriptionAsync();
        await ExecuteOnGreenAsync($"ALTER SUBSCRIPTION {subscription} DISABLE");
        try
        {
            await ShouldRefuseAsync("replication.healthy", "replication is", "pg_stat_subscription");
        }
        finally
        {
            await ExecuteOnGreenAsync($"ALTER SUBSCRIPTION {subscription} ENABLE");
        }

        await WaitUntilCleanAsync();
    }

    /// <summary>
    /// The lag check compares blue's slot lag in bytes (current WAL position − the slot's
    /// confirmed flush) with half the timeout at 16 MiB/s: 30 s allows 240 MiB. With the
    /// subscription disabled, each pg_switch_wal after a write moves blue to a new 16 MiB WAL
    /// segment the slot has not confirmed, so 17 of them are a real lag of over 256 MiB.
    /// </summary>
    [Fact]
    public async Task LagTooHighForTimeout_Refused()
    {
        await WaitUntilCleanAsync();
        var subscription = await SubscriptionAsync();
        await ExecuteOnGreenAsync($"ALTER SUBSCRIPTION {subscription} DISABLE");
        try
        {
            for (var i = 0; i < 17; i++)
            {
                await Scenario.Blue.ExecuteAsync($"INSERT INTO orders (note) VALUES ('lag {i}')", BlueGreenScenario.Database);
                await Scenario.Blue.ExecuteAsync("SELECT pg_switch_wal()", BlueGreenScenario.Database);
            }

            await ShouldRefuseAsync("replication.lag", "more than half the 30 s switchover timeout", "raise --switchover-timeout", "--switchover-timeout", "30");
        }
        finally
        {
            await ExecuteOnGreenAsync($"ALTER SUBSCRIPTION {subscription} ENABLE");
        }

        await WaitUntilCleanAsync();
        // Green caught up with the rows written while it lagged.
        var green = new NpgsqlConnectionStringBuilder(await GreenUrlAsync(asTeal: true)) { Pooling = false }.ConnectionString;
        (await BlueGreenScenario.ScalarAsync<long>(green, "SELECT count(*) FROM orders WHERE note LIKE 'lag %'")).ShouldBe(17);
    }

    /// <summary>
    /// Green is fenced: the application's role cannot log in there. Someone gives it LOGIN back by
    /// hand and connects: both the login and the session refuse the switchover.
    /// </summary>
    [Fact]
    public async Task ClientSessionOnGreen_Refused()
    {
        await WaitUntilCleanAsync();
        var greenAsApp = new NpgsqlConnectionStringBuilder(await GreenUrlAsync())
        {
            Pooling = false,
            ApplicationName = "stray-client",
            Username = BlueGreenScenario.AppUser,
            Password = BlueGreenScenario.AppPassword,
        };
        (await BlueGreenScenario.AcceptsWritesAsync(greenAsApp.ConnectionString)).ShouldBeFalse();
        // The managed green is fenced by its pg_hba.conf: a hole is green's own rules put back by hand.
        await ExecuteOnGreenAsync(CopyFileSql("current_setting('hba_file')", "current_setting('hba_file') || '.fenced'"));
        await ExecuteOnGreenAsync(CopyFileSql("current_setting('hba_file') || '.teal-original'", "current_setting('hba_file')") + "; SELECT pg_reload_conf()");
        try
        {
            await using var client = new NpgsqlConnection(greenAsApp.ConnectionString);
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (true)
            {
                try
                {
                    // The reload reaches the postmaster a moment after pg_reload_conf() returns.
                    await client.OpenAsync();
                    break;
                }
                catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.InvalidAuthorizationSpecification && DateTime.UtcNow < deadline)
                {
                    await Task.Delay(100);
                }
            }

            var check = await ShouldRefuseAsync("green.no-clients", "client session(s) on green", "disconnect them");
            Check(check, "green.no-clients").GetProperty("message").GetString()!.ShouldContain("stray-client");
            Check(check, "green.fence").GetProperty("message").GetString()!.ShouldContain(BlueGreenScenario.AppUser);
        }
        finally
        {
            await ExecuteOnGreenAsync(CopyFileSql("current_setting('hba_file') || '.fenced'", "current_setting('hba_file')") + "; SELECT pg_reload_conf()");
        }

        await WaitUntilCleanAsync();
    }

    [Fact]
    public async Task LongWriteTransactionOnBlue_Refused()
    {
        await WaitUntilCleanAsync();
        var builder = new NpgsqlConnectionStringBuilder(Scenario.EndpointConnectionString) { Pooling = false };
        await using (var writer = new NpgsqlConnection(builder.ConnectionString))
        {
            await writer.OpenAsync();
            await using var transaction = await writer.BeginTransactionAsync();
            await using (var insert = new NpgsqlCommand("INSERT INTO orders (note) VALUES ('long transaction')", writer, transaction))
            {
                await insert.ExecuteNonQueryAsync();
            }

            await Task.Delay(TimeSpan.FromSeconds(3));
            await ShouldRefuseAsync("blue.long-transactions", "write transaction(s) on blue older than 1 s", "let them finish", "--long-transaction-threshold", "1");
            await transaction.RollbackAsync();
        }

        await WaitUntilCleanAsync();
    }

    [Fact]
    public async Task DdlOnBlue_Degraded_Refused()
    {
        await WaitUntilCleanAsync();
        await Scenario.Blue.ExecuteAsync("ALTER TABLE orders ADD COLUMN guardrail_note text", BlueGreenScenario.Database);
        await WaitForReplicationStateAsync("DEGRADED");
        var check = await ShouldRefuseAsync("replication-not-degraded", "replication is DEGRADED", "teal ack-ddl");
        var ddl = Check(check, "replication.ddl");
        Outcome(ddl).ShouldBe("FAIL");
        ddl.GetProperty("message").GetString()!.ShouldContain("ADD COLUMN guardrail_note");

        // The fix the hint names: apply it on green, acknowledge it.
        await ExecuteOnGreenAsync("ALTER TABLE orders ADD COLUMN guardrail_note text");
        (await Scenario.Cli.RunAsync("ack-ddl", "upgrade")).ShouldSucceed();
        await WaitUntilCleanAsync();
    }

    [Theory]
    [InlineData("CREATE PUBLICATION other FOR TABLE orders", "publication other", "DROP PUBLICATION other")]
    [InlineData("SELECT pg_create_logical_replication_slot('external_cdc', 'pgoutput')", "slot external_cdc", "SELECT pg_drop_replication_slot('external_cdc')")]
    public async Task ExternalReplicationOnBlue_Refused(string create, string named, string drop)
    {
        await WaitUntilCleanAsync();
        await Scenario.Blue.ExecuteAsync(create, BlueGreenScenario.Database);
        try
        {
            var check = await ShouldRefuseAsync("blue.external-replication", "blue has replication Teal does not manage", "move or drop them first");
            Check(check, "blue.external-replication").GetProperty("message").GetString()!.ShouldContain(named);
        }
        finally
        {
            await Scenario.Blue.ExecuteAsync(drop, BlueGreenScenario.Database);
        }

        // CREATE/DROP PUBLICATION is replication plumbing, not DDL green needs: nothing to acknowledge.
        await WaitUntilCleanAsync();
    }

    [Theory]
    [InlineData("10")]
    [InlineData("3601")]
    public async Task SwitchoverTimeoutOutOfRange_Refused(string seconds)
    {
        await WaitUntilCleanAsync();
        var refused = await Scenario.Cli.RunAsync("switchover", "upgrade", "--switchover-timeout", seconds);
        refused.ExitCode.ShouldBe(1, refused.ToString());
        (refused.Stdout + refused.Stderr).ShouldContain("30–3600");
        await ShouldBeUnchangedAsync();
    }

    [Fact]
    public async Task DryRun_PrintsPlanAndGuardrails_ChangesNothing()
    {
        await WaitUntilCleanAsync();
        var plan = await Scenario.Cli.RunAsync("switchover", "upgrade", "--dry-run");
        plan.ShouldSucceed();
        plan.Stdout.ShouldContain("switchover plan for upgrade");
        plan.Stdout.ShouldContain("point of no return");
        // Every step's description starts in one column, past the longest step name.
        var steps = plan.Stdout.Split('\n').Where(l => System.Text.RegularExpressions.Regex.IsMatch(l, @"^\s+\d+\. ")).ToList();
        steps.Count.ShouldBeGreaterThan(10);
        steps.Select(l => System.Text.RegularExpressions.Regex.Match(l, @"^\s+\d+\. \S+\s+").Length).Distinct().Count().ShouldBe(1, plan.Stdout);
        foreach (var guardrail in new[] { "deployment-available", "replication.healthy", "replication.lag", "green.no-clients", "blue.external-replication", "blue.long-transactions" })
        {
            plan.Stdout.ShouldContain(guardrail);
        }

        plan.Stdout.ShouldContain("all guardrails pass");
        await ShouldBeUnchangedAsync();
        var deployment = await Scenario.ShowAsync();
        deployment.GetProperty("blue").GetString().ShouldBe("app");
        (deployment.TryGetProperty("switchover", out var switchover) && switchover.ValueKind == JsonValueKind.Object).ShouldBeFalse(deployment.ToString());
    }

    /// <summary>Check fails on <paramref name="name"/> (message and hint), the switchover is refused, nothing changed. Returns the check's JSON.</summary>
    private async Task<JsonElement> ShouldRefuseAsync(string name, string message, string hint, params string[] options)
    {
        var check = await Scenario.Cli.RunAsync(["check", "upgrade", "--output", "json", .. options], TimeSpan.FromMinutes(1));
        var failed = FailedCheck(check, name);
        failed.GetProperty("message").GetString()!.ShouldContain(message);
        failed.GetProperty("hint").GetString()!.ShouldContain(hint);

        var switchover = await Scenario.Cli.RunAsync(["switchover", "upgrade", .. options], TimeSpan.FromMinutes(1));
        switchover.ExitCode.ShouldBe(1, switchover.ToString());
        // The refusal names what failed (the first failing check's message).
        (switchover.Stdout + switchover.Stderr).ShouldContain("switchover refused");
        (switchover.Stdout + switchover.Stderr).ShouldContain(message);
        await ShouldBeUnchangedAsync();
        return JsonDocument.Parse(check.Stdout).RootElement.Clone();
    }

    private async Task ShouldBeUnchangedAsync()
    {
        var deployment = await Scenario.ShowAsync();
        BlueGreenScenario.Status(deployment).ShouldBe("AVAILABLE", deployment.ToString());
        (await BlueGreenScenario.AcceptsWritesAsync(Scenario.EndpointConnectionString)).ShouldBeTrue();
        (await BlueGreenScenario.ScalarAsync<string>(Scenario.EndpointConnectionString, "SHOW server_version")).ShouldStartWith("15.");
    }

    private static JsonElement FailedCheck(CliResult check, string name)
    {
        check.ExitCode.ShouldBe(1, check.ToString());
        var failed = Check(JsonDocument.Parse(check.Stdout).RootElement, name);
        Outcome(failed).ShouldBe("FAIL", check.Stdout);
        return failed;
    }

    private static JsonElement Check(JsonElement report, string name)
    {
        var results = report.GetProperty("results").EnumerateArray().Where(r => r.GetProperty("name").GetString() == name).ToList();
        results.Count.ShouldBe(1, $"no check {name} in {report}");
        return results[0].Clone();
    }

    private static string Outcome(JsonElement result)
    {
        var outcome = result.GetProperty("outcome");
        return outcome.ValueKind == JsonValueKind.Number
            ? ((global::Teal.Core.Guardrails.CheckOutcome)outcome.GetInt32()).ToString().ToUpperInvariant()
            : BlueGreenScenario.Normalize(outcome.GetString());
    }

    /// <summary>Waits until every guardrail passes (an earlier test's undo has taken effect).</summary>
    private async Task WaitUntilCleanAsync()
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        CliResult check;
        do
        {
            check = await Scenario.Cli.RunAsync("check", "upgrade", "--output", "json");
            if (check.ExitCode == 0)
            {
                return;
            }

            await Task.Delay(500);
        }
        while (DateTime.UtcNow < deadline);
        throw new TimeoutException($"guardrails did not all pass again: {check}");
    }

    private async Task WaitForReplicationStateAsync(string state)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < deadline)
        {
            var deployment = await Scenario.PollAsync();
            if (BlueGreenScenario.Normalize(deployment.GetProperty("replication").GetProperty("state").GetString()) == state)
            {
                return;
            }

            await Task.Delay(250);
        }

        throw new TimeoutException($"replication never became {state}: {await Scenario.ShowAsync()}");
    }

    private async Task<string> GreenUrlAsync(bool asTeal = false) => await Scenario.InstanceUrlAsync(fixture.Green, asTeal);

    /// <summary>
    /// Runs SQL on green as Teal's admin would by hand: green is fenced until the switchover, so
    /// the session logs in as Teal's own login and opts out of the read-only default; the
    /// connection is closed right after (no lingering session).
    /// </summary>
    private async Task ExecuteOnGreenAsync(string sql)
    {
        var builder = new NpgsqlConnectionStringBuilder(await GreenUrlAsync(asTeal: true)) { Pooling = false, Options = "-c default_transaction_read_only=off" };
        await BlueGreenScenario.ExecuteAsync(builder.ConnectionString, sql);
    }

    /// <summary>Copies one of green's files over another as its server's OS user (a large object made and exported in separate statements).</summary>
    private static string CopyFileSql(string from, string to) =>
        $"DO $copy$ DECLARE o oid; BEGIN o := lo_from_bytea(0, pg_read_binary_file({from})); PERFORM lo_export(o, {to}); PERFORM lo_unlink(o); END $copy$";

    private async Task<string> SubscriptionAsync()
    {
        var builder = new NpgsqlConnectionStringBuilder(await GreenUrlAsync(asTeal: true)) { Pooling = false };
        return await BlueGreenScenario.ScalarAsync<string>(builder.ConnectionString, "SELECT subname::text FROM pg_subscription");
    }
}
