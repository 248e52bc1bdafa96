using Microsoft.Extensions.Time.Testing;
using Teal.Core.Deployments;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Core.Switchover;
using Teal.Core.Switchover.Steps;
using Teal.Core.Tests.Switchover.Support;

namespace Teal.Core.Tests.Switchover.Steps;

/// <summary>
/// The pause's refusal names how to find the transaction that held it up in blue's own engine:
/// the query comes from the link (PostgreSQL's pg_stat_activity would send a MariaDB operator
/// nowhere). The engines' tests run each link's query on a real server.
/// </summary>
public sealed class PauseEndpointsStepTests
{
    [Fact]
    public async Task ExecuteAsync_EndpointStaysBusyPastTheDrainBudget_HintIsTheLinksOpenTransactionsQuery()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 4, 12, 0, 0, TimeSpan.Zero));
        var link = new UnusedLink();
        var deployment = new Deployment(DeploymentId.New(), "upgrade", DeploymentStatus.SwitchoverInProgress) { Blue = "app", Green = "app-green", Database = "app", CreatedAt = time.GetUtcNow() };
        var context = new SwitchoverContext
        {
            SwitchoverId = "so-test",
            Deployment = deployment,
            Current = deployment,
            Link = link,
            Endpoints = [new NeverPausing()],
            // The step's budget runs on the real clock (a PgBouncer PAUSE is a socket wait): the
            // smallest budget keeps the test to about a second.
            Options = new SwitchoverOptions { DrainBudget = TimeSpan.Zero },
            State = new InMemoryStateStore(time),
            Time = time,
            Deadline = time.GetUtcNow() + TimeSpan.FromMinutes(5),
        };

        var refused = await Should.ThrowAsync<TealException>(() => new PauseEndpointsStep().ExecuteAsync(context, CancellationToken.None));

        refused.Code.ShouldBe("switchover.pause-timeout");
        refused.Hint.ShouldBe($"find the long transaction on blue ({link.OpenTransactionsQuery}) or give a larger --drain-budget");
    }

    /// <summary>An endpoint whose pause waits for a transaction that never ends.</summary>
    private sealed class NeverPausing : IEndpoint
    {
        public string Name => "ep";

        public EndpointTarget Target => new("app", "127.0.0.1", 1, "app");

        public bool Paused => false;

        public EndpointStats Stats => EndpointStats.Empty;

        public Task PauseAsync(TimeSpan holdDeadline, CancellationToken cancellationToken) => Task.Delay(Timeout.Infinite, cancellationToken);

        public Task<EndpointDrainResult> DrainAsync(TimeSpan budget, CancellationToken cancellationToken) => throw new NotSupportedException();

        public Task FlipAsync(EndpointTarget target, CancellationToken cancellationToken) => throw new NotSupportedException();

        public Task ResumeAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
