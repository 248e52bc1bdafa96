using System.Collections.Concurrent;
using System.Diagnostics.Tracing;
using System.Reflection;
using Teal.Server.Hosting;

namespace Teal.Server.Tests.Hosting;

/// <summary>
/// What the warm-up is for: code it compiled is not compiled again at its first call. Checked
/// with the runtime's own JIT events on types of this test only (no other test can have run
/// them first): an interface implementation, which PrepareMethod alone leaves to its first call,
/// and an async method that waits, whose builder and box are generic over its state machine.
/// </summary>
public sealed class CodeWarmUpFirstUseTests
{
    private interface IWork
    {
        string Name { get; }

        Task<Gauge> RunAsync(Task<int> gate);
    }

    [Fact]
    public async Task Compile_AnInterfaceMethodAndAnAsyncMethodThatWaits_CompileNothingAtTheirFirstCall()
    {
        var types = new[] { typeof(Work), typeof(Gauge) }.Concat(typeof(Work).GetNestedTypes(BindingFlags.NonPublic)).ToList();
        CodeWarmUp.Compile(types).ShouldBeGreaterThan(10, "the class, its state machine, the builder's methods and the box's");

        using var jit = new JitEvents();
        IWork work = new Work();
        var gate = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        var running = work.RunAsync(gate.Task); // waits: the state machine moves into its box
        gate.SetResult(41);
        (await running).Value.ShouldBe(42);
        work.Name.ShouldBe("work");

        // Compiled now, never before: proves the listener hears the JIT in this process.
        Control(new Gauge(1)).ShouldBe(1);
        await jit.WaitForAsync(nameof(Control));

        jit.Compiled.Where(m => m.Contains(nameof(Gauge), StringComparison.Ordinal) || m.Contains("+Work", StringComparison.Ordinal)).ShouldBeEmpty(
            $"compiled at first use after the warm-up:\n{string.Join("\n", jit.Compiled)}");
    }

    private static int Control(Gauge gauge) => gauge.Value;

    private readonly record struct Gauge(int Value);

    private sealed class Work : IWork
    {
        public string Name => "work";

        public async Task<Gauge> RunAsync(Task<int> gate) => new(await gate + 1);
    }

    /// <summary>Names of methods the JIT compiles while it lives (the runtime's MethodLoadVerbose events).</summary>
    private sealed class JitEvents : EventListener
    {
        public ConcurrentQueue<string> Compiled { get; } = new();

        public async Task WaitForAsync(string method)
        {
            // Runtime events reach a listener through EventPipe's dispatch thread, a little later.
            for (var i = 0; i < 200 && !Compiled.Any(m => m.Contains("::" + method, StringComparison.Ordinal)); i++)
            {
                await Task.Delay(50);
            }

            Compiled.ShouldContain(m => m.Contains("::" + method, StringComparison.Ordinal), "the JIT events never arrived");
        }

        protected override void OnEventSourceCreated(EventSource eventSource)
        {
            if (eventSource.Name == "Microsoft-Windows-DotNETRuntime")
            {
                EnableEvents(eventSource, EventLevel.Verbose, (EventKeywords)0x10); // JIT
            }
        }

        protected override void OnEventWritten(EventWrittenEventArgs eventData)
        {
            if (eventData.EventName?.StartsWith("MethodLoadVerbose", StringComparison.Ordinal) == true && eventData.PayloadNames is { } names && eventData.Payload is { } payload)
            {
                Compiled.Enqueue($"{payload[names.IndexOf("MethodNamespace")]}::{payload[names.IndexOf("MethodName")]}");
            }
        }
    }
}
