using Npgsql;

namespace Teal.EndToEnd.Tests.Switchover;

/// <summary>
/// On PostgreSQL the side being left is fenced while the endpoints drain, not after: the fence
/// refuses logins and makes transactions that start later read-only, so a client's transaction
/// open through Teal's endpoint at the pause goes on writing on the fenced side, commits there,
/// and its session moves on. Both kinds of fence: NOLOGIN on the registered blue at switchover,
/// the server's pg_hba.conf on the server Teal provisioned at switchback.
/// </summary>
public sealed class InFlightTransactionTests
{
    // Far longer than the fence takes to appear; the drain budget is longer still, so a fence
    // that waited for the drain would show as a timeout here, not as a transaction cut.
    private static readonly TimeSpan FenceAppears = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task TransactionOpenThroughTheEndpoint_WritesAndCommitsOnTheFencedSide_AndItsSessionMoves()
    {
        await using var scenario = await BlueGreenScenario.StartAsync();
        await scenario.CreateDeploymentAsync();

        await using var client = new NpgsqlConnection(scenario.EndpointConnectionString);
        await client.OpenAsync();

        // Switchover: the registered blue (15) is fenced by NOLOGIN.
        var blue = await scenario.InstanceUrlAsync("app");
        await CommitAcrossTheFenceAsync(scenario, client, blue, "switchover", "in flight at switchover");
        (await VersionAsync(client)).ShouldStartWith("17.");

        // Switchback: the server Teal provisioned (17) is fenced by its pg_hba.conf.
        var green = await scenario.InstanceUrlAsync("app");
        await CommitAcrossTheFenceAsync(scenario, client, green, "switchback", "in flight at switchback");
        (await VersionAsync(client)).ShouldStartWith("15.");

        // Every row the client committed is on the side it now writes to, which the other side
        // replicated it to: nothing the fence let finish was lost.
        var notes = await BlueGreenScenario.ScalarAsync<long>(
            await scenario.InstanceUrlAsync("app"),
            "SELECT count(*) FROM orders WHERE note LIKE 'in flight at %'");
        notes.ShouldBe(4);
    }

    /// <summary>
    /// Opens a transaction through the endpoint and writes in it, starts the cutover, waits for
    /// <paramref name="side"/> to refuse logins (the fence) while that transaction is still
    /// open, then writes again and commits: both succeed, and the cutover completes.
    /// </summary>
    private static async Task CommitAcrossTheFenceAsync(BlueGreenScenario scenario, NpgsqlConnection client, string side, string verb, string note)
    {
        await using var transaction = await client.BeginTransactionAsync();
        await InsertAsync(client, transaction, note + ", before the fence");

        var cutover = scenario.Cli.RunAsync([verb, "upgrade", "--wait", "--drain-budget", "40"], TimeSpan.FromMinutes(2));
        var fenced = await FencedWithinAsync(side, FenceAppears);
        cutover.IsCompleted.ShouldBeFalse($"the cutover ended while the client's transaction was still open: {(cutover.IsCompleted ? cutover.Result.ToString() : string.Empty)}");
        fenced.ShouldBeTrue($"{verb}: the side being left did not refuse logins within {FenceAppears.TotalSeconds} s while a transaction through the endpoint was open (is it fenced only after the endpoints drained?)");

        // The fence is in place: the open transaction still writes and commits.
        await InsertAsync(client, transaction, note + ", after the fence");
        await transaction.CommitAsync();

        var result = await cutover;
        result.ShouldSucceed();
        var deployment = await scenario.ShowAsync();
        // A switchback ends where the deployment began: available, blue in production.
        BlueGreenScenario.Status(deployment).ShouldBe(verb == "switchover" ? "SWITCHOVER_COMPLETED" : "AVAILABLE", deployment.ToString());
    }

    private static async Task InsertAsync(NpgsqlConnection client, NpgsqlTransaction transaction, string note)
    {
        await using var insert = new NpgsqlCommand("INSERT INTO orders (note) VALUES ($1)", client, transaction) { Parameters = { new() { Value = note } } };
        (await insert.ExecuteNonQueryAsync()).ShouldBe(1);
    }

    private static async Task<string> VersionAsync(NpgsqlConnection client)
    {
        await using var version = new NpgsqlCommand("SHOW server_version", client);
        return (string)(await version.ExecuteScalarAsync())!;
    }

    /// <summary>Whether a new login to the side is refused (both fences refuse Teal's registered login too) within <paramref name="within"/>.</summary>
    private static async Task<bool> FencedWithinAsync(string side, TimeSpan within)
    {
        var unpooled = new NpgsqlConnectionStringBuilder(side) { Pooling = false }.ConnectionString;
        var deadline = DateTime.UtcNow + within;
        while (DateTime.UtcNow < deadline)
        {
            try
            {
                await using var login = new NpgsqlConnection(unpooled);
                await login.OpenAsync();
            }
            catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.InvalidAuthorizationSpecification)
            {
                return true;
            }

            await Task.Delay(20);
        }

        return false;
    }
}
