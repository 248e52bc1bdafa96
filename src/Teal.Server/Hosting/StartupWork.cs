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
public sealed class StartupWork(LiveEndpoints endpoints, InstanceService instances, SwitchoverService switchovers, DeploymentService deployments, ReplicationMonitor monitor, ILogger<StartupWork> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // Endpoints first: applications reconnect as soon as Teal is back.
        await endpoints.StartAllAsync(stoppingToken);
        await instances.StartManagedAsync(stoppingToken);
        // A switchover Teal was running when it stopped is finished or unwound before anything
        // else touches the deployment (the journal says which).
        await switchovers.RecoverAsync(stoppingToken);
        await deployments.ResumeAsync(stoppingToken);
        // So that the first switchover compiles nothing while clients are held.
        CodeWarmUp.Start(logger);
        try
        {
            await monitor.RunAsync(stoppingToken);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Teal is stopping.
        }
    }
}
