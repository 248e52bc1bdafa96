using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.Core.Guardrails;

namespace Teal.Core.Switchover;

/// <summary>
/// The guardrails of PRODUCT.md §6: the deployment-level ones here, the engine-level ones
/// (replication health, lag against the timeout, sessions on green, external replication, long
/// writes and DDL on blue) from the link. All run; all are reported.
/// </summary>
public static class SwitchoverGuardrails
{
    /// <summary>
    /// Every guardrail of the cutover asked for. A switchback (<c>switchback</c> true: green →
    /// the old blue) needs the deployment reversed; a switchover needs it not to be.
    /// </summary>
    public static async Task<CheckReport> CheckAsync(Deployment deployment, IReplicationLink link, int endpoints, SwitchoverOptions options, CancellationToken cancellationToken, bool switchback = false)
    {
        ArgumentNullException.ThrowIfNull(deployment);
        var ready = Ready(deployment, switchback);
        var results = new List<CheckResult>
        {
            ready,
            deployment.Replication.State == ReplicationState.Degraded
                ? CheckResult.Fail("replication-not-degraded", $"replication is DEGRADED: {deployment.Replication.Reason}", $"run `teal apply-ddl {deployment.Name}` (or apply the DDL on green yourself and run `teal ack-ddl {deployment.Name}`), and `teal add-tables {deployment.Name}` for tables, partitions or columns green lacks")
                : CheckResult.Pass("replication-not-degraded", $"replication is {Screaming(deployment.Replication.State)}"),
            endpoints > 0
                ? CheckResult.Pass("endpoints", $"{endpoints} endpoint(s) route to blue and will be moved")
                : CheckResult.Warn("endpoints", "no endpoint routes to blue: clients connected to blue directly will get read-only errors and must be repointed by you", "add one with `teal endpoint add` and point applications at it"),
        };

        if (ready.Passed)
        {
            var engine = await link.CheckSwitchoverAsync(
                new SwitchoverGuardrailOptions(options.Timeout) { LongTransactionThreshold = options.LongTransactionThreshold, FenceWholeServer = options.FenceWholeServer },
                cancellationToken);
            results.AddRange(engine.Results);
            if (!switchback && deployment.TargetReaders > 0)
            {
                // The reader endpoint moves to green's readers at the flip: they must be there.
                results.Add(await GreenTopology.CheckAsync(deployment, link, cancellationToken));
            }
        }

        return new CheckReport(results);
    }

    /// <summary>
    /// A switchover needs AVAILABLE (or a failed one before) with replication blue → green; a
    /// switchback needs SWITCHOVER_COMPLETED (or a failed switchback) with reverse replication.
    /// </summary>
    private static CheckResult Ready(Deployment deployment, bool switchback)
    {
        var status = Screaming(deployment.Status);
        if (switchback)
        {
            return deployment.Reversed && deployment.Status is DeploymentStatus.SwitchoverCompleted or DeploymentStatus.SwitchoverFailed
                ? CheckResult.Pass("deployment-available", $"deployment is {status}, replicating back to the old blue '{deployment.Blue}'")
                : CheckResult.Fail(
                    "deployment-available",
                    deployment.Reversed ? $"deployment is {status}" : $"deployment is {status} without reverse replication: there is no switchover to go back from without losing writes",
                    deployment.Reversed ? "wait for the running switchover to end (`teal show`)" : "a switchback needs a switchover with reverse replication (not `teal create --no-reverse-replication`), not yet finished with `teal finish`");
        }

        if (deployment.Reversed)
        {
            return CheckResult.Fail(
                "deployment-available",
                $"deployment is {status}, not AVAILABLE: green is production and replicates to the old blue",
                $"wait until `teal show` says AVAILABLE: go back with `teal switchback {deployment.Name}` (then switch over again), or end it with `teal finish {deployment.Name}`");
        }

        return deployment.Status is DeploymentStatus.Available or DeploymentStatus.SwitchoverFailed
            ? CheckResult.Pass("deployment-available", $"deployment is {status}")
            : CheckResult.Fail("deployment-available", $"deployment is {status}, not AVAILABLE", "wait until `teal show` says AVAILABLE");
    }

    internal static string Screaming<T>(T value)
        where T : struct, Enum =>
        System.Text.RegularExpressions.Regex.Replace(value.ToString(), "(?<=[a-z])(?=[A-Z])", "_").ToUpperInvariant();
}
