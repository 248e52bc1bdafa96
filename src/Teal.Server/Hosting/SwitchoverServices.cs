using Microsoft.Extensions.DependencyInjection;
using Teal.Core.Switchover;

namespace Teal.Server.Hosting;

/// <summary>The switchover's services (the executor takes every registered <see cref="ISwitchoverStepDecorator"/>; production registers none).</summary>
public static class SwitchoverServices
{
    public static IServiceCollection AddSwitchover(this IServiceCollection services)
    {
        // Retry or stop past the point of no return: the engines' classifiers decide (ITransientErrorClassifier).
        services.AddSingleton<Teal.Core.Errors.TransientErrors>();
        services.AddSingleton<SwitchoverExecutor>();
        services.AddSingleton<SwitchoverService>();
        return services;
    }
}
