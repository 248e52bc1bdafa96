using Microsoft.Extensions.DependencyInjection;
using Teal.Core.Switchover;
using Teal.FaultHost;
using Teal.Server;

// `teal serve --data-dir DIR --listen ADDR [--endpoints external]`, plus the fault named by TEAL_FAULT (see FaultDecorator).
if (args.Length < 5 || args[0] != "serve" || args[1] != "--data-dir" || args[3] != "--listen")
{
    Console.Error.WriteLine("usage: Teal.FaultHost serve --data-dir DIR --listen HOST:PORT   (fault in TEAL_FAULT)");
    return 2;
}

// A shared state store, as `teal serve` reads it from its environment.
var sharedState = Environment.GetEnvironmentVariable("TEAL_STATE") is { Length: > 0 } state ? state : null;
// As `teal serve` does, before any socket exists (inline completions only without a PostgreSQL state store).
Teal.Proxy.Hosting.ProxyRuntime.ConfigureProcess(inlineSocketCompletions: sharedState is null);
var fault = Environment.GetEnvironmentVariable("TEAL_FAULT");
var app = TealServer.Build(
    new TealServerOptions(args[2])
    {
        Listen = args[4],
        ExternalEndpoints = args.Skip(5).SequenceEqual(["--endpoints", "external"]),
        State = sharedState,
        StatePassword = Environment.GetEnvironmentVariable("TEAL_STATE_PASSWORD"),
        StateKeyFile = Environment.GetEnvironmentVariable("TEAL_STATE_KEY_FILE") is { Length: > 0 } key ? key : null,
    },
    services =>
    {
        if (!string.IsNullOrEmpty(fault))
        {
            services.AddSingleton<ISwitchoverStepDecorator>(new FaultDecorator(fault));
        }
    });
await app.RunAsync();
return 0;
