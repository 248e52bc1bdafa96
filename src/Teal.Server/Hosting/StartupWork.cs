using Microsoft.Extensions.Hosting;
using Teal.Core.Deployments;
using Teal.Server.Instances;

namespace Teal.Server.Hosting;

/// <summary>
/// What <c>teal serve</c> does once up, in the background so the API answers at once: start
/// the managed instances that are not running, resume creates in progress, then watch
/// replication until Teal stops.
/// </summary>
public sealed class StartupWork(InstanceService instances, DeploymentService deployments, ReplicationMonitor monitor) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        await instances.StartManagedAsync(stoppingToken);
        await deployments.ResumeAsync(stoppingToken);
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
