using Npgsql;
using Teal.Testing.Load;
using Teal.Testing.Processes;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// The cutover operators care about: pgbench and a probe write through Teal's endpoint while
/// blue (15) switches over to green (17). Nothing acknowledged may be lost, blue must refuse
/// writes afterwards, and new rows must get keys green has not used. A writer connected straight
/// to blue as its superuser, trying to write four times a second with BEGIN READ WRITE, never
/// gets an acknowledgement from blue after blue's final position.
/// </summary>
public sealed class SwitchoverUnderLoadTests
{
    [Fact]
    public async Task Switchover_UnderPgbenchAndProbeLoad_KeepsEveryAcknowledgedWriteAndFencesBlue()
    {
        // As operators run it: teal serve compiles its code at start (TealProcess.WarmUpOff).
        await using var scenario = await BlueGreenScenario.StartAsync(tealEnvironment: TealProcess.WarmUpOn);
        await scenario.CreateDeploymentAsync();

        // A session held across the switchover, with a setting and a prepared statement: Teal's
        // proxy moves it to green (the auth query reads app_user's verifier, which green got
        // with blue's roles), and it goes on without an error.
        await using var held = new NpgsqlConnection(scenario.EndpointConnectionString);
        await held.OpenAsync();
        await using (var set = new NpgsqlCommand("SET application_name = 'held-across'", held))
        {
            await set.ExecuteNonQueryAsync();
        }

        await using var where = new NpgsqlCommand("SELECT current_setting('server_version') || ' ' || current_setting('application_name') || ' ' || $1", held) { Parameters = { new() { Value = "prepared" } } };
        await where.PrepareAsync();
        ((string)(await where.ExecuteScalarAsync())!).ShouldStartWith("15.");

        await using var probe = new ProbeWriter(scenario.EndpointConnectionString);
        probe.Start();
        await using var direct = new DirectWriter(scenario.Blue.ConnectionString(BlueGreenScenario.Database), TimeSpan.FromMilliseconds(250));
        direct.Start();
        // -C: a new connection per transaction, as a pooled application reconnects after a drain.
        var load = PgBench.TpcbAsync("127.0.0.1", scenario.EndpointPort, BlueGreenScenario.AppUser, BlueGreenScenario.AppPassword, BlueGreenScenario.Database, clients: 8, TimeSpan.FromSeconds(12), connectPerTransaction: true);
        await Task.Delay(TimeSpan.FromSeconds(3));

        var switchover = await scenario.Cli.RunAsync(["switchover", "upgrade", "--wait", "--output", "json"], TimeSpan.FromMinutes(2));
        switchover.ShouldSucceed();
        var ackedAtSwitchover = probe.Acknowledged.Count;
        await Task.Delay(TimeSpan.FromSeconds(2));
        await probe.StopAsync();
        await direct.StopAsync();
        var bench = await load;

        var deployment = await scenario.ShowAsync();
        BlueGreenScenario.Status(deployment).ShouldBe("SWITCHOVER_COMPLETED", deployment.ToString());
        var moved = (string)(await where.ExecuteScalarAsync())!;
        moved.ShouldStartWith("17.");
        moved.ShouldEndWith(" held-across prepared");
        deployment.GetProperty("blue").GetString().ShouldBe("app-old1");
        deployment.GetProperty("green").GetString().ShouldBe("app");

        var green = await scenario.InstanceUrlAsync("app");
        (await BlueGreenScenario.ScalarAsync<string>(green, "SHOW server_version")).ShouldStartWith("17.");

        // Every acknowledged probe row is on green.
        var acked = probe.Acknowledged;
        acked.Count.ShouldBeGreaterThan(100);
        // The probe kept writing after the switchover: through the endpoint, on green.
        acked.Count.ShouldBeGreaterThan(ackedAtSwitchover, string.Join("\n", probe.Errors.TakeLast(5)));
        await using (var connection = new NpgsqlConnection(green))
        {
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand($"SELECT count(*) FROM {ProbeWriter.Table} WHERE n = ANY($1)", connection) { Parameters = { new() { Value = acked.ToArray() } } };
            ((long)(await command.ExecuteScalarAsync())!).ShouldBe(acked.Count);
        }

        // Every transaction pgbench saw committed left its history row on green.
        bench.Processed.ShouldBeGreaterThan(0, bench.Output);
        (await BlueGreenScenario.ScalarAsync<long>(green, "SELECT count(*) FROM pgbench_history")).ShouldBeGreaterThanOrEqualTo(bench.Processed, bench.Output);

        // The direct writer: acknowledged on blue before the fence, never after blue's final
        // position (each acknowledgement's position is at most the final one), and every
        // acknowledged row is on green. Afterwards it cannot even log in.
        var final = DirectWriter.Lsn(deployment.GetProperty("switchover").GetProperty("blueFinalPosition").GetString()!);
        var directAcks = direct.Acknowledged;
        directAcks.Count.ShouldBeGreaterThan(5, string.Join("\n", direct.Errors.TakeLast(5)));
        directAcks.Where(a => a.UpperBound is not null && DirectWriter.Lsn(a.UpperBound) > final).ShouldBeEmpty();
        await using (var connection = new NpgsqlConnection(green))
        {
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand($"SELECT count(*) FROM {DirectWriter.Table} WHERE n = ANY($1)", connection) { Parameters = { new() { Value = directAcks.Select(a => a.N).ToArray() } } };
            ((long)(await command.ExecuteScalarAsync())!).ShouldBe(directAcks.Count);
        }

        direct.Errors.ShouldContain(e => e.StartsWith(PostgresErrorCodes.InvalidAuthorizationSpecification, StringComparison.Ordinal));

        // Old blue refuses writes, for its superuser too.
        var oldBlue = await scenario.InstanceUrlAsync("app-old1");
        var refused = await Should.ThrowAsync<PostgresException>(() => BlueGreenScenario.ExecuteAsync(oldBlue, "INSERT INTO orders (note) VALUES ('after, on blue')"));
        // The fence took LOGIN from every role but Teal's: the superuser cannot even log in.
        refused.SqlState.ShouldBe(PostgresErrorCodes.InvalidAuthorizationSpecification);

        // Sequences were synced: new rows through the endpoint get fresh keys.
        await BlueGreenScenario.ExecuteAsync(scenario.EndpointConnectionString, "INSERT INTO orders (note) SELECT 'after ' || g FROM generate_series(1, 10) g");
        (await BlueGreenScenario.ScalarAsync<long>(scenario.EndpointConnectionString, "SELECT max(id) FROM orders")).ShouldBe(510);
        (await BlueGreenScenario.ScalarAsync<string>(scenario.EndpointConnectionString, "SHOW server_version")).ShouldStartWith("17.");

        // The old blue applies green's writes for a switchback until the operator finishes.
        (await scenario.Cli.RunAsync("finish", "upgrade")).ShouldSucceed();

        // The explicit unfence gives the old blue's logins back, exactly those the fence took.
        var unfenced = await scenario.Cli.RunAsync("instance", "unfence", "app-old1");
        unfenced.ShouldSucceed();
        unfenced.Stdout.ShouldContain(BlueGreenScenario.AppUser);
        (await BlueGreenScenario.AcceptsWritesAsync(oldBlue)).ShouldBeTrue();

        // teal serve compiled its code at start, every engine's and its async methods' included, without failing.
        scenario.Teal.Log.ShouldContain("methods ahead of use");
    }
}
