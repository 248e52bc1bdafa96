using Teal.Proxy.Hosting;

namespace Teal.Proxy.Tests.Endpoints;

public sealed class ProxyRuntimeTests
{
    [Fact]
    public void TestProcess_RunsWithTheProxysSocketSettings()
    {
        // Guards proxy.runsettings: the suite must exercise the configuration production uses.
        Environment.GetEnvironmentVariable(ProxyRuntime.InlineCompletionsVariable).ShouldBe("1");
    }

    [Fact]
    public void ConfigureProcess_RaisesTheThreadPoolFloor()
    {
        ProxyRuntime.ConfigureProcess();

        ThreadPool.GetMinThreads(out var workers, out _);
        workers.ShouldBeGreaterThanOrEqualTo(ProxyRuntime.MinWorkerThreads);
    }
}
