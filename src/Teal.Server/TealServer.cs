using System.Reflection;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Teal.Core.Deployments;
using Teal.Core.Endpoints;
using Teal.Core.Engines;
using Teal.Core.Hosting;
using Teal.Core.Instances;
using Teal.Core.Secrets;
using Teal.Core.State;
using Teal.Postgres.Engines;
using Teal.Postgres.Instances;
using Teal.MySql.Engines;
using Teal.MySql.Instances;
using Teal.Proxy.Endpoints;
using Teal.Proxy.Hosting;
using Teal.Server.Api;
using Teal.Server.Endpoints;
using Teal.Server.Hosting;
using Teal.Server.Json;
using Teal.Server.Observability;
using Teal.Server.Secrets;
using Teal.Server.State;

namespace Teal.Server;

/// <summary>
/// <c>teal serve</c>: the control plane in one host — state store, secrets, engines, the
/// deployment service and its monitors, and the REST API. Every service is registered here and
/// nowhere else; a new route group is one line in <see cref="MapRoutes"/>.
/// </summary>
public static class TealServer
{
    /// <summary>Teal's version without the source revision (0.1.0).</summary>
    public static string Version { get; } =
        (typeof(TealServer).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0.0.0").Split('+')[0];

    /// <summary>
    /// Builds the host: creates the data directory, migrates the state file (a file from a newer
    /// Teal fails here, before anything listens) and loads or creates the token.
    /// <paramref name="configure"/> adds or replaces services (the proxy's live endpoints, tests).
    /// </summary>
    public static WebApplication Build(TealServerOptions options, Action<IServiceCollection>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var dataDirectory = Path.GetFullPath(options.DataDirectory);
        options = options with { DataDirectory = dataDirectory };
        // Owner only (0700; 0711 when Teal is root, so the managed servers' OS users reach instances/).
        DataDirectory.Prepare(dataDirectory);
        var listen = TealServerOptions.ParseAddress(options.Listen, "server");
        // Before the state store opens or anything binds: a second control plane on this
        // directory would recover, drive switchovers and bind endpoints beside the first.
        var held = DataDirectoryLock.Acquire(dataDirectory, options.Listen);
        try
        {
            return Build(options, listen, held, configure);
        }
        catch
        {
            held.Dispose();
            throw;
        }
    }

    private static WebApplication Build(TealServerOptions options, System.Net.IPEndPoint listen, DataDirectoryLock held, Action<IServiceCollection>? configure)
    {
        var dataDirectory = options.DataDirectory;
        CreateDirectory(options.InstancesDirectory);

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [], ContentRootPath = dataDirectory });
        builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(listen));
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole(console =>
        {
            console.SingleLine = true;
            console.TimestampFormat = "HH:mm:ss.fff ";
        });
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        builder.Services.ConfigureHttpJsonOptions(json => TealJson.Configure(json.SerializerOptions));
        builder.Services.Configure<RouteHandlerOptions>(routes => routes.ThrowOnBadRequest = true);
        builder.Services.AddOpenApi();
        // Created by a factory so the container disposes it (and frees the directory) with the host.
        builder.Services.AddSingleton(_ => held);
        AddServices(builder.Services, options);
        configure?.Invoke(builder.Services);

        var app = builder.Build();
        app.Services.GetRequiredService<DataDirectoryLock>();
        // Resolved now so a state file Teal cannot use stops the start with its message.
        app.Services.GetRequiredService<IStateStore>();
        // And secrets (a shared store refuses a machine without its key) and the token.
        app.Services.GetRequiredService<ISecretStore>();
        app.Services.GetRequiredService<ServerToken>();
        app.Lifetime.ApplicationStarted.Register(() => held.Record(BoundAddress(app).Authority));
        app.UseMiddleware<ApiErrors>();
        app.UseMiddleware<JsonBodyCheck>();
        app.UseRouting();
        app.UseMiddleware<TokenCheck>();
        app.UseMiddleware<StandbyCheck>();
        MapRoutes(app);
        return app;
    }

    /// <summary>The address the started host listens on (the free port, when port 0 was asked for).</summary>
    public static Uri BoundAddress(WebApplication app)
    {
        ArgumentNullException.ThrowIfNull(app);
        var address = app.Services.GetRequiredService<IServer>().Features.GetRequiredFeature<IServerAddressesFeature>().Addresses.First();
        return new Uri(address.Replace("[::]", "127.0.0.1", StringComparison.Ordinal).Replace("0.0.0.0", "127.0.0.1", StringComparison.Ordinal));
    }

    private static void AddServices(IServiceCollection services, TealServerOptions options)
    {
        services.AddSingleton(options);
        services.AddSingleton(TimeProvider.System);
        services.AddSingleton<EventSignal>();
        if (options.State is null)
        {
            services.AddSingleton(ServerToken.LoadOrCreate(options.TokenFile));
            services.AddSingleton(sp => new SqliteStateStore(sp.GetRequiredService<DataDirectoryLock>(), sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<EventSignal>()));
            services.AddSingleton<IStateStore>(sp => sp.GetRequiredService<SqliteStateStore>());
            services.AddSingleton<ISecretStore>(_ => new FileSecretStore(options.DataDirectory));
            services.AddSingleton(Leadership.Alone());
        }
        else
        {
            AddSharedState(services, options);
        }

        // Engines. ProcessRunner (initdb, pg_ctl, pg_dump) is static and needs no registration.
        services.AddSingleton(PostgresEngineOptions.FromEnvironment());
        services.AddSingleton<PostgresEngineCatalog>();
        services.AddSingleton<IEngine, PostgresEngine>();
        services.AddSingleton<IInstanceProvisioner, PostgresProvisioner>();
        services.AddSingleton<Teal.Core.Errors.ITransientErrorClassifier, Teal.Postgres.Connections.PostgresTransientErrors>();
        services.AddSingleton(MariaDbEngineOptions.FromEnvironment());
        services.AddSingleton<MariaDbEngineCatalog>();
        services.AddSingleton<IEngine, MariaDbEngine>();
        services.AddSingleton<IInstanceProvisioner, MariaDbProvisioner>();
        services.AddSingleton<EngineRegistry>();

        // Deployments.
        services.AddSingleton(new CreateOptions { InstancesDirectory = options.InstancesDirectory });
        services.AddSingleton<BackgroundWork>();
        services.AddSingleton<DeploymentLinks>();
        services.AddSingleton<DeploymentRecorder>();
        services.AddSingleton<CreateWorkflow>();
        services.AddSingleton<DeploymentService>();
        services.AddSingleton<ReplicationMonitor>();
        services.AddSingleton<ReaderRoutes>();
        services.AddSingleton<ControlPasswordRotation>();

        // Endpoints: Teal's proxy serves the declared ones and answers the switchover's
        // "which endpoints route to this instance?".
        // Clients asking for TLS get the data directory's certificate (generated at first start)
        // unless an endpoint names its own.
        services.AddSingleton(sp => new ProxyOptions { Certificate = Teal.Proxy.Tls.ProxyCertificate.LoadOrCreate(options.DataDirectory) });
        services.AddSingleton<StateTargetResolver>();
        services.AddSingleton<IEndpointTargetResolver>(sp => sp.GetRequiredService<StateTargetResolver>());
        services.AddSingleton<Teal.Proxy.Sessions.IScramVerifierSource, ControlVerifierSource>();
        services.AddSingleton<ProxyManager>();
        services.AddSingleton<PgBouncerEndpoints>();
        services.AddSingleton<EndpointRouteResolver>();
        // `teal proxy` processes: registered by heartbeat, driven by the switchover beside (or instead of) the listeners here.
        services.AddSingleton<Teal.Server.RemoteProxies.RemoteProxyRegistry>();
        services.AddSingleton<Teal.Server.RemoteProxies.ProxyRouteTableSource>();
        services.AddHostedService<Teal.Server.RemoteProxies.RemoteProxyWatch>();
        services.AddSingleton<IEndpointRegistry, EndpointRegistry>();
        services.AddSwitchover();
        services.AddSingleton<LiveEndpoints>();
        services.AddSingleton<IEndpointHost>(sp => sp.GetRequiredService<LiveEndpoints>());

        services.AddSingleton(new InstanceOptions { InstancesDirectory = options.InstancesDirectory });
        services.AddSingleton<InstanceService>();
        services.AddSingleton<EndpointService>();
        services.AddSingleton<EndpointCanary>();
        services.AddSingleton<Readiness>();
        services.AddHostedService<StartupWork>();
        services.AddObservability();
    }

    /// <summary>
    /// A PostgreSQL state store shared by several control-plane machines: passwords sealed in it,
    /// the API token shared through it, and a standby until this server is elected leader.
    /// </summary>
    private static void AddSharedState(IServiceCollection services, TealServerOptions options)
    {
        services.AddSingleton(sp => new PostgresStateStore(options.State!, options.StatePassword, sp.GetRequiredService<TimeProvider>(), sp.GetRequiredService<EventSignal>())
        {
            // Nothing is written before the election says this server leads.
            Fence = WriteFence.Standby(null),
        });
        services.AddSingleton<IStateStore>(sp => sp.GetRequiredService<PostgresStateStore>());
        services.AddSingleton(sp => new PostgresSecretStore(sp.GetRequiredService<PostgresStateStore>(), options.StateKeyPath));
        services.AddSingleton<ISecretStore>(sp => sp.GetRequiredService<PostgresSecretStore>());
        services.AddSingleton(sp => ServerToken.Shared(options.TokenFile, sp.GetRequiredService<PostgresSecretStore>()));
        services.AddSingleton(Leadership.Elected());
        services.AddHostedService<PostgresLeaderElection>();
    }

    private static HealthView Health(TealServerOptions options, Leadership leadership, Readiness readiness) =>
        new("ok", Version) { State = options.State is null ? "sqlite" : "postgresql", Role = leadership.Role, Leader = leadership.LeaderUrl, Ready = readiness.IsReady(leadership) };

    /// <summary>
    /// 200 once the endpoints listen (or as a standby), 503 before: for a readiness check, where
    /// <c>/healthz</c> (always 200 while the process answers) is the liveness check.
    /// </summary>
    private static IResult Ready(TealServerOptions options, Leadership leadership, Readiness readiness)
    {
        var health = Health(options, leadership, readiness);
        return health.Ready == true ? Results.Ok(health) : Results.Json(health with { Status = "starting" }, statusCode: StatusCodes.Status503ServiceUnavailable);
    }

    private static void MapRoutes(WebApplication app)
    {
        app.MapGet("/healthz", (TealServerOptions options, Leadership leadership, Readiness readiness) => Health(options, leadership, readiness));
        app.MapGet("/readyz", Ready);
        app.MapOpenApi();
        var api = app.MapGroup("/api");
        api.MapGet("/health", (TealServerOptions options, Leadership leadership, Readiness readiness) => Health(options, leadership, readiness));
        EngineRoutes.Map(api);
        InstanceRoutes.Map(api);
        DeploymentRoutes.Map(api);
        EventRoutes.Map(api);
        EndpointRoutes.Map(api);
        SwitchoverRoutes.Map(api);
        Teal.Server.RemoteProxies.RemoteProxyRoutes.Map(api);
        app.MapObservability();
        api.MapFallback((HttpContext context) => ApiErrors.WriteAsync(
            context,
            new ApiProblem("about:blank", "Not Found", StatusCodes.Status404NotFound, $"no route {context.Request.Method} {context.Request.Path}", "request.no-route") { Hint = "see the OpenAPI document at /openapi/v1.json" }));
    }

    private static void CreateDirectory(string path)
    {
        if (!Directory.Exists(path))
        {
            // Traversable: managed servers run as another OS user and live below it; the data
            // directory above decides who gets this far.
            Directory.CreateDirectory(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        }
    }
}
