using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Teal.Core.Deployments;
using Teal.Core.Instances;
using Teal.Core.Switchover;
using Teal.Server.Endpoints;

namespace Teal.Server.Hosting;

/// <summary>
/// What <c>teal serve</c> does once up, in the background so the API answers at once: start
/// the endpoints' listeners and the managed instances that are not running, finish or unwind an
/// interrupted switchover, resume creates in progress, compile the switchover's code ahead of use, then watch
/// replication until Teal stops.
/// </summary>
/// <remarks>
/// On a shared state store all of it waits until this server leads (a standby binds no
/// endpoint and drives nothing), and stops when leadership is lost: a new leader thus runs the
/// same recovery a restarted one would, from the journal the old leader left.
/// </remarks>
public sealed class StartupWork(Leadership leadership, Readiness readiness, LiveEndpoints endpoints, InstanceService instances, SwitchoverService switchovers, DeploymentService deployments, ReplicationMonitor monitor, ILogger<StartupWork> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            await leadership.Gained.WaitAsync(stoppingToken);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            return;
        }

        using var leading = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken, leadership.Lost);
        var ct = leading.Token;
        try
        {
            // Endpoints first: applications reconnect as soon as Teal is back.
            await endpoints.StartAllAsync(ct);
            readiness.EndpointsStarted();
            await instances.StartManagedAsync(ct);
            // A switchover Teal was running when it stopped is finished or unwound before anything
            // else touches the deployment (the journal says which).
            await switchovers.RecoverAsync(ct);
            await deployments.ResumeAsync(ct);
            // So that the first switchover compiles nothing while clients are held.
            CodeWarmUp.Start(logger);
            await monitor.RunAsync(ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // Teal is stopping, or lost leadership.
        }
    }
}
