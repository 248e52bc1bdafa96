using Teal.Core.Switchover.Steps;

namespace Teal.Core.Switchover;

/// <summary>
/// The switchover runbook (PRODUCT.md §6) as code: the steps in order, the point of no return
/// named (<see cref="FlipStep"/>). The live executor and <c>--dry-run</c> read the same list.
/// A switchback runs the same list over the deployment's link in reverse (green → old blue).
/// </summary>
public static class SwitchoverPlan
{
    public static IReadOnlyList<ISwitchoverStep> Forward() =>
    [
        new GuardrailsStep(),       // 1. every guardrail, again, right before acting
        new PrepareReverseReplicationStep(), // the slot back to blue, made on green before the pause
        new PauseEndpointsStep(),   // 2. new connections are held
        new DrainEndpointsStep(),   //    endpoint connections close between transactions
        new FenceBlueStep(),        // 3. blue read-only for every role
        new DrainBlueStep(),        //    direct sessions finish within the budget or are terminated
        new CatchUpStep(),          // 4. blue's final position applied on green
        new SyncSequencesStep(),    // 5. sequences
        new FlipStep(),             // 6. POINT OF NO RETURN: routes and names move to green
        new OpenGreenStep(),        // 7. green writable (only now: never two writable sides)
        new ResumeEndpointsStep(),  // 8. held connections proceed to green
        new StopReplicationStep(),  //    forward replication dropped, outside the write pause
        new StartReverseReplicationStep(), // green → old blue, from green's position once caught up
    ];
}
