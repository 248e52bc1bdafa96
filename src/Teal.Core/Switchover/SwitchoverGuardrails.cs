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
    public static async Task<CheckReport> CheckAsync(Deployment deployment, IReplicationLink link, int endpoints, SwitchoverOptions options, CancellationToken cancellationToken)
    {
        var results = new List<CheckResult>
        {
            deployment.Status is DeploymentStatus.Available or DeploymentStatus.SwitchoverFailed
                ? CheckResult.Pass("deployment-available", $"deployment is {Screaming(deployment.Status)}")
                : CheckResult.Fail("deployment-available", $"deployment is {Screaming(deployment.Status)}, not AVAILABLE", "wait until `teal show` says AVAILABLE"),
            deployment.Replication.State == ReplicationState.Degraded
                ? CheckResult.Fail("replication-not-degraded", $"replication is DEGRADED: {deployment.Replication.Reason}", $"run `teal apply-ddl {deployment.Name}` (or apply the DDL on green yourself and run `teal ack-ddl {deployment.Name}`), and `teal add-tables {deployment.Name}` for tables, partitions or columns green lacks")
                : CheckResult.Pass("replication-not-degraded", $"replication is {Screaming(deployment.Replication.State)}"),
            endpoints > 0
                ? CheckResult.Pass("endpoints", $"{endpoints} endpoint(s) route to blue and will be moved")
                : CheckResult.Warn("endpoints", "no endpoint routes to blue: clients connected to blue directly will get read-only errors and must be repointed by you", "add one with `teal endpoint add` and point applications at it"),
        };

        if (deployment.Status is DeploymentStatus.Available or DeploymentStatus.SwitchoverFailed)
        {
            var engine = await link.CheckSwitchoverAsync(
                new SwitchoverGuardrailOptions(options.Timeout) { LongTransactionThreshold = options.LongTransactionThreshold, FenceWholeServer = options.FenceWholeServer },
                cancellationToken);
            results.AddRange(engine.Results);
        }

        return new CheckReport(results);
    }

    internal static string Screaming<T>(T value)
        where T : struct, Enum =>
        System.Text.RegularExpressions.Regex.Replace(value.ToString(), "(?<=[a-z])(?=[A-Z])", "_").ToUpperInvariant();
}
