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
}
