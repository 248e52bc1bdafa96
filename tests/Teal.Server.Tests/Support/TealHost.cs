using System.Net.Http.Headers;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Teal.Core.Engines;
using Teal.Core.State;
using Teal.Server;
using Teal.Testing;

namespace Teal.Server.Tests.Support;

/// <summary>
/// A real <c>teal serve</c> in the test process, on a free loopback port with its own data
/// directory. Disposal removes every managed instance it made, whether the test passed or not.
/// </summary>
public sealed class TealHost : IAsyncDisposable
{
    private readonly WebApplication _app;

    private TealHost(WebApplication app, string dataDirectory)
    {
        _app = app;
        DataDirectory = dataDirectory;
        Url = TealServer.BoundAddress(app);
    }

    public string DataDirectory { get; }

    public Uri Url { get; }

    public string Token => File.ReadAllText(Path.Combine(DataDirectory, "token")).Trim();

    public IStateStore State => _app.Services.GetRequiredService<IStateStore>();

    public IServiceProvider Services => _app.Services;

    public static async Task<TealHost> StartAsync(string? dataDirectory = null, Action<IServiceCollection>? configure = null)
    {
        var directory = dataDirectory ?? TestDirectories.NewDirectory("teal");
        var app = TealServer.Build(new TealServerOptions(directory) { Listen = "127.0.0.1:0" }, configure);
        await app.StartAsync();
        return new TealHost(app, directory);
    }

    /// <summary>An HTTP client for the API, with the token unless told otherwise.</summary>
    public HttpClient Client(bool withToken = true)
    {
        var client = new HttpClient { BaseAddress = Url };
        if (withToken)
        {
            client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Token);
        }

        return client;
    }

    public async ValueTask DisposeAsync()
    {
        var engines = _app.Services.GetRequiredService<EngineRegistry>();
        foreach (var instance in await State.ListInstancesAsync(CancellationToken.None))
        {
            if (instance.Managed is not null)
            {
                await engines.Provisioner(instance.Engine).RemoveAsync(instance, CancellationToken.None);
            }
        }

        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
