using Microsoft.Extensions.Logging.Abstractions;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Postgres.Instances;
using Teal.Server.Hosting;
using Teal.Server.RemoteProxies;
using Teal.Server.State;
using Teal.Testing;

namespace Teal.Server.Tests.RemoteProxies;

/// <summary>
/// The control plane's side of <c>teal proxy</c>: proxies are registered by heartbeat, dropped
/// with an event once silent past the limit, remembered across a restart, and a switchover's
/// pause or drain fails when one does not answer while flip and resume only log.
/// </summary>
public sealed class RemoteProxyRegistryTests : IDisposable
{
    private readonly string _dir = TestDirectories.NewDirectory("proxies");
    private readonly ManualClock _clock = new();
    private readonly SqliteStateStore _state;

    public RemoteProxyRegistryTests()
    {
        _state = new SqliteStateStore(_dir, _clock, new EventSignal());
    }

    [Fact]
    public async Task DropSilent_NoHeartbeatPastTheLimit_DropsTheProxyWithAnEvent()
    {
        using var registry = Registry();
        await registry.HeartbeatAsync(new ProxyHeartbeat("p1", new Uri("http://127.0.0.1:1")), CancellationToken.None);
        await registry.HeartbeatAsync(new ProxyHeartbeat("p2", new Uri("http://127.0.0.1:2")), CancellationToken.None);

        _clock.Now += TimeSpan.FromSeconds(40);
        await registry.HeartbeatAsync(new ProxyHeartbeat("p2", new Uri("http://127.0.0.1:2")), CancellationToken.None);
        _clock.Now += TimeSpan.FromSeconds(30);
        await registry.DropSilentAsync(CancellationToken.None);

        registry.All.Select(p => p.Name).ShouldBe(["p2"], "p1 was silent for 70 s, p2 for 30 s");
        var events = await _state.ListEventsAsync(null, 0, 100, CancellationToken.None);
        events.Select(e => e.Kind).ShouldBe([ProxyEventKinds.Registered, ProxyEventKinds.Registered, ProxyEventKinds.Dropped]);
        events[^1].Data["proxy"].ShouldBe("p1");
    }

    [Fact]
    public async Task NewRegistry_SameDataDirectory_KnowsTheProxiesBeforeTheirNextHeartbeat()
    {
        using (var first = Registry())
        {
            await first.HeartbeatAsync(new ProxyHeartbeat("p1", new Uri("http://127.0.0.1:7401")), CancellationToken.None);
        }

        using var restarted = Registry();
        restarted.All.Select(p => (p.Name, p.AdminUrl.ToString())).ShouldBe([("p1", "http://127.0.0.1:7401/")]);
        File.GetUnixFileMode(Path.Combine(_dir, "proxies.json")).ShouldBe(UnixFileMode.UserRead | UnixFileMode.UserWrite);
    }

    [Fact]
    public async Task Fleet_ProxyDoesNotAnswer_DrainFailsNamingIt_FlipAndResumeOnlyLog()
    {
        using var registry = Registry();
        var port = ManagedPostgres.FreePort(); // nothing listens there
        await registry.HeartbeatAsync(new ProxyHeartbeat("gone", new Uri($"http://127.0.0.1:{port}")), CancellationToken.None);
        var target = new EndpointTarget("app", "127.0.0.1", 5432, "app");
        var fleet = new ProxyFleetEndpoint(new EndpointSpec("app", EndpointKind.Proxy, "app"), target, null, registry.All, registry, NullLogger.Instance);

        // The pause reaches the proxies with the drain: the drain step fails, before blue is fenced.
        await fleet.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        var drain = await Should.ThrowAsync<TealException>(() => fleet.DrainAsync(TimeSpan.FromSeconds(1), CancellationToken.None));
        drain.Code.ShouldBe("endpoint.proxy-unreachable");
        drain.Message.ShouldContain("teal proxy 'gone'");

        var green = target with { Port = 5433 };
        await fleet.FlipAsync(green, CancellationToken.None);
        // Not awaited by the switchover: a proxy that does not take it costs nothing but a log line.
        await fleet.LoginsOpenAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(1));
        await fleet.ResumeAsync(CancellationToken.None);
        fleet.Target.ShouldBe(green);
    }

    [Fact]
    public async Task Fleet_LoginsOpenBeforeOrAfterTheFlip_TellsEveryProxyTheResumesTargetOnce()
    {
        using var two = await TwoProxiesAsync();
        var (first, second, fleet, green) = (two.First, two.Second, two.Fleet, two.Green);

        await fleet.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        await fleet.DrainAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
        // open-green runs alongside the flip: logins may be back before the target is known.
        await fleet.LoginsOpenAsync(CancellationToken.None);
        await Task.Delay(300);
        first.Requests.Count.ShouldBe(1, "no target to log in on before the flip");
        await fleet.FlipAsync(green, CancellationToken.None);
        await fleet.LoginsOpenAsync(CancellationToken.None);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (first.Requests.Count < 2 || second.Requests.Count < 2)
        {
            DateTime.UtcNow.ShouldBeLessThan(deadline, "every proxy is told that green's logins are back");
            await Task.Delay(50);
        }

        await fleet.ResumeAsync(CancellationToken.None);

        foreach (var proxy in new[] { first, second })
        {
            proxy.Requests.Select(r => r.Path).ShouldBe(["/proxy/endpoints/app/drain", "/proxy/endpoints/app/logins-open", "/proxy/endpoints/app/resume"]);
            proxy.Requests[1].Body.ShouldContain("\"port\":5433");
            proxy.Requests[2].Body.ShouldContain("\"port\":5433", customMessage: "the resume still carries the flip");
        }
    }

    [Fact]
    public async Task Fleet_Switchover_ReachesEveryProxyInTwoCalls_PauseWithTheDrain_FlipWithTheResume()
    {
        using var two = await TwoProxiesAsync();
        var (first, second, fleet, green) = (two.First, two.Second, two.Fleet, two.Green);

        await fleet.PauseAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        await fleet.DrainAsync(TimeSpan.FromSeconds(5), CancellationToken.None);
        await fleet.FlipAsync(green, CancellationToken.None);
        await fleet.ResumeAsync(CancellationToken.None);

        foreach (var proxy in new[] { first, second })
        {
            proxy.Requests.Select(r => r.Path).ShouldBe(["/proxy/endpoints/app/drain", "/proxy/endpoints/app/resume"]);
            proxy.Requests[0].Body.ShouldContain("\"holdSeconds\":30");
            proxy.Requests[1].Body.ShouldContain("\"port\":5433");
        }

        fleet.Target.ShouldBe(green);
    }

    public void Dispose() => _state.Dispose();

    /// <summary>Two recording proxies registered, and the fleet endpoint "app" over them, routing to blue (port 5432).</summary>
    private async Task<TwoProxies> TwoProxiesAsync()
    {
        var registry = Registry();
        var first = new RecordingProxy();
        var second = new RecordingProxy();
        await registry.HeartbeatAsync(new ProxyHeartbeat("p1", first.Url), CancellationToken.None);
        await registry.HeartbeatAsync(new ProxyHeartbeat("p2", second.Url), CancellationToken.None);
        var blue = new EndpointTarget("app", "127.0.0.1", 5432, "app");
        var fleet = new ProxyFleetEndpoint(new EndpointSpec("app", EndpointKind.Proxy, "app"), blue, null, registry.All, registry, NullLogger.Instance);
        return new TwoProxies(registry, first, second, fleet, blue with { Port = 5433 });
    }

    private sealed record TwoProxies(RemoteProxyRegistry Registry, RecordingProxy First, RecordingProxy Second, ProxyFleetEndpoint Fleet, EndpointTarget Green) : IDisposable
    {
        public void Dispose()
        {
            Registry.Dispose();
            First.Dispose();
            Second.Dispose();
        }
    }

    /// <summary>A proxy admin API that answers every command and records it.</summary>
    private sealed class RecordingProxy : IDisposable
    {
        private readonly System.Net.HttpListener _listener = new();
        private readonly List<(string Path, string Body)> _requests = [];

        public RecordingProxy()
        {
            var port = ManagedPostgres.FreePort();
            Url = new Uri($"http://127.0.0.1:{port}/");
            _listener.Prefixes.Add(Url.ToString());
            _listener.Start();
            _ = Task.Run(ServeAsync);
        }

        public Uri Url { get; }

        public IReadOnlyList<(string Path, string Body)> Requests
        {
            get
            {
                lock (_requests)
                {
                    return [.. _requests];
                }
            }
        }

        public void Dispose() => _listener.Close();

        private async Task ServeAsync()
        {
            while (_listener.IsListening)
            {
                System.Net.HttpListenerContext context;
                try
                {
                    context = await _listener.GetContextAsync();
                }
                catch (Exception ex) when (ex is System.Net.HttpListenerException or ObjectDisposedException)
                {
                    return;
                }

                using var reader = new StreamReader(context.Request.InputStream);
                var body = await reader.ReadToEndAsync();
                lock (_requests)
                {
                    _requests.Add((context.Request.Url!.AbsolutePath, body)); // A request always has its URL.
                }

                var drain = context.Request.Url.AbsolutePath.EndsWith("/drain", StringComparison.Ordinal);
                context.Response.StatusCode = drain ? 200 : 204;
                if (drain)
                {
                    context.Response.ContentType = "application/json";
                    await context.Response.OutputStream.WriteAsync("{\"closedIdle\":0,\"closedAtDeadline\":0}"u8.ToArray());
                }

                context.Response.Close();
            }
        }
    }

    private RemoteProxyRegistry Registry() => new(
        new TealServerOptions(_dir) { ProxySilenceLimit = TimeSpan.FromSeconds(60), ProxyCallTimeout = TimeSpan.FromSeconds(2) },
        new ServerToken("test-token"),
        _state,
        _clock,
        NullLogger<RemoteProxyRegistry>.Instance);

    private sealed class ManualClock : TimeProvider
    {
        public DateTimeOffset Now { get; set; } = new(2026, 12, 5, 0, 0, 0, TimeSpan.Zero);

        public override DateTimeOffset GetUtcNow() => Now;
    }
}
