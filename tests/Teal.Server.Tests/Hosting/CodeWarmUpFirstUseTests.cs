using System.Collections.Concurrent;
using System.Diagnostics.Tracing;
using System.Reflection;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Teal.Server.Hosting;

namespace Teal.Server.Tests.Hosting;

/// <summary>
/// What the warm-up is for: code it compiled is not compiled again at its first call. Checked
/// with the runtime's own JIT events on types of this test only (no other test can have run
/// them first): an interface implementation, which PrepareMethod alone leaves to its first call,
/// an async method that waits, whose builder and box are generic over its state machine, and a
/// log message, whose logger, provider logger and console formatter are generic over its arguments.
/// </summary>
public sealed partial class CodeWarmUpFirstUseTests
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

    [Fact]
    public async Task Compile_ALogMessage_CompilesTheLoggingPipelineItsFirstLineRuns()
    {
        // The process's own pipeline, as teal serve configures it: the console's logger and formatter.
        using var factory = LoggerFactory.Create(logging => logging.AddSimpleConsole());
        var logger = factory.CreateLogger<CodeWarmUpFirstUseTests>();
        Messages.Before(logger, new Tally(0)); // What a first line runs whatever its arguments (the console's queue), before measuring.
        CodeWarmUp.Compile([typeof(Messages)]).ShouldBeGreaterThan(20, "the messages' methods and logging's code over their arguments");

        using var jit = new JitEvents();
        MarkStart();
        Messages.Measured(logger, new Reading(3), 4);
        MarkEnd();
        await jit.WaitForAsync(nameof(MarkEnd));

        // The JIT compiles a method on the thread that first calls it: what this thread compiled
        // between the two marks is what the log line needed and the warm-up left.
        var compiled = jit.OnThreadOf(nameof(MarkStart), nameof(MarkEnd));
        compiled.Where(m => m.StartsWith("Microsoft.Extensions.Logging", StringComparison.Ordinal)).ShouldBeEmpty(
            $"compiled at the first line after the warm-up:\n{string.Join("\n", compiled)}");
    }

    private static int Control(Gauge gauge) => gauge.Value;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void MarkStart()
    {
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void MarkEnd()
    {
    }

    private readonly record struct Reading(int Value);

    private readonly record struct Tally(int Value);

    private static partial class Messages
    {
        [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "Before {Tally}")]
        public static partial void Before(ILogger logger, Tally tally);

        [LoggerMessage(EventId = 2, Level = LogLevel.Information, Message = "Reading {Reading} at {Count}")]
        public static partial void Measured(ILogger logger, Reading reading, int count);
    }

    private readonly record struct Gauge(int Value);

    private sealed class Work : IWork
    {
        public string Name => "work";

        public async Task<Gauge> RunAsync(Task<int> gate) => new(await gate + 1);
    }

    /// <summary>Names of methods the JIT compiles while it lives (the runtime's MethodLoadVerbose events).</summary>
    private sealed class JitEvents : EventListener
    {
        private readonly ConcurrentQueue<(string Method, long Thread)> _events = new();

        public IEnumerable<string> Compiled => _events.Select(e => e.Method);

        /// <summary>What the thread that compiled <paramref name="first"/> compiled after it and before <paramref name="last"/>.</summary>
        public List<string> OnThreadOf(string first, string last)
        {
            var events = _events.ToList();
            var start = events.FindIndex(e => e.Method.EndsWith("::" + first, StringComparison.Ordinal));
            start.ShouldBeGreaterThanOrEqualTo(0, $"{first} was never compiled");
            var thread = events[start].Thread;
            return [.. events.Skip(start + 1).Where(e => e.Thread == thread).TakeWhile(e => !e.Method.EndsWith("::" + last, StringComparison.Ordinal)).Select(e => e.Method)];
        }

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
                _events.Enqueue(($"{payload[names.IndexOf("MethodNamespace")]}::{payload[names.IndexOf("MethodName")]}", eventData.OSThreadId));
            }
        }
    }
}
