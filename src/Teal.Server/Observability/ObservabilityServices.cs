using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Prometheus;
using Teal.Server.Dashboard;
using Teal.Server.Events;
using Teal.Server.Metrics;

namespace Teal.Server.Observability;

/// <summary>
/// What operators and their monitoring look at: <c>/metrics</c>, the event stream and webhooks,
/// and the dashboard. Registered and mapped from <see cref="TealServer"/> with one call each.
/// </summary>
public static class ObservabilityServices
{
    public static IServiceCollection AddObservability(this IServiceCollection services)
    {
        services.AddSingleton<TealMetrics>();
        services.AddSingleton<WebhookStore>();
        services.AddSingleton(new WebhookOptions());
        services.AddSingleton<WebhookDispatcher>();
        services.AddHostedService(sp => sp.GetRequiredService<WebhookDispatcher>());
        return services;
    }

    public static WebApplication MapObservability(this WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        app.MapMetrics("/metrics", app.Services.GetRequiredService<TealMetrics>().Registry);
        EventStreamRoutes.Map(app);
        WebhookRoutes.Map(app);
        DashboardRoutes.Map(app);
        return app;
    }
}
