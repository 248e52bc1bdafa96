using Teal.Core.Engines;
using Teal.Postgres.Replication;
using Teal.Testing;

namespace Teal.Postgres.Tests.Replication;

/// <summary>The sessions a switchover uses inside its write pause, as the warm-up before it leaves them.</summary>
public sealed class LinkSessionsTests(BlueGreenFixture servers) : IClassFixture<BlueGreenFixture>
{
    /// <summary>
    /// The fence's steps run PL/pgSQL blocks on both sides; the first block in a backend loads
    /// the language (9 ms on an idle machine), which belongs before the pause. A backend that
    /// loaded it knows PL/pgSQL's settings: plpgsql.variable_conflict reads NULL until then.
    /// </summary>
    [Fact]
    public async Task WarmUp_LeavesEverySessionTheFenceRuns_WithPlpgsqlLoaded()
    {
        const string db = "warm_sessions";
        await LinkTestKit.CreateDatabaseAsync(servers.Blue, db);
        await LinkTestKit.CreateDatabaseAsync(servers.Green, db);
        await using var sessions = new LinkSessions(LinkTestKit.Spec(servers.Blue, servers.Green, db, LinkTestKit.NewName("teal")));

        await sessions.WarmUpAsync(default);

        foreach (var side in new[] { Side.Blue, Side.Green })
        {
            // Both at once: the pool's two sessions, as the warm-up left them.
            var open = await Task.WhenAll(sessions.OpenAsync(side, default), sessions.OpenAsync(side, default));
            try
            {
                foreach (var conn in open)
                {
                    (await conn.ScalarAsync<string>("SELECT current_setting('plpgsql.variable_conflict', true)", default))
                        .ShouldNotBeNull($"{side}'s session {conn.ProcessID} has not loaded PL/pgSQL");
                }
            }
            finally
            {
                foreach (var conn in open)
                {
                    await conn.DisposeAsync();
                }
            }
        }
    }
}
