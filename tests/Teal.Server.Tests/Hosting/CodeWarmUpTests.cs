using Teal.Server.Hosting;

namespace Teal.Server.Tests.Hosting;

public sealed class CodeWarmUpTests
{
    [Fact]
    public void CompileAll_CompilesTheSwitchoverAndEndpointCode_WithoutThrowing()
    {
        // Every step class, the executor, the PgBouncer driver and the proxy have dozens of
        // methods each (async state machines included); a warm-up that skipped assemblies or
        // stopped at the first odd method would compile far fewer.
        var compiled = CodeWarmUp.CompileAll();

        compiled.ShouldBeGreaterThan(1000);
    }

    [Fact]
    public void CompileAllForProxy_CompilesTheProxyAndItsHost_NotTheEngines()
    {
        var forProxy = CodeWarmUp.CompileAllForProxy();

        forProxy.ShouldBeGreaterThan(500, "the proxy's forwarding, moves and admin routes");
        forProxy.ShouldBeLessThan(CodeWarmUp.CompileAll(), "a teal proxy runs no engine or executor code");
    }
}
