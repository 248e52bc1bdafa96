using System.Diagnostics;
using System.Reflection;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Console;

namespace Teal.Server.Hosting;

/// <summary>
/// Compiles Teal's own code ahead of its first use. Without it the first switchover after
/// Teal starts compiles the executor, the steps and the endpoint drivers while clients are
/// held: measured on the 2-core build machine, its write pause was 250–300 ms longer than the
/// next ones'. Runs once, on a background thread of low priority, after the startup work that
/// clients wait for (endpoints, recovery).
/// </summary>
public static partial class CodeWarmUp
{
    /// <summary>Starts the warm-up of teal serve's code on its own thread and returns at once.</summary>
    public static void Start(ILogger logger) => Start(logger, ServerAssemblies);

    /// <summary>
    /// The same for a <c>teal proxy</c> process: only what it runs (the proxy, its admin API and
    /// host). Its first switchover is often its only one, an upgrade a year: without this the
    /// drain, the moves and the admin routes compiled while its clients were held.
    /// </summary>
    public static void StartForProxy(ILogger logger) => Start(logger, ProxyAssemblies);

    // The assemblies whose code runs inside a switchover: engine-neutral core, the PostgreSQL
    // engine and PgBouncer driver, the MariaDB/MySQL engine, the proxy, the server.
    private static Assembly[] ServerAssemblies =>
    [
        typeof(Core.Switchover.SwitchoverExecutor).Assembly,
        typeof(Postgres.PgBouncer.PgBouncerEndpoint).Assembly,
        typeof(MySql.Engines.MariaDbEngine).Assembly,
        typeof(Proxy.Endpoints.ProxyEndpoint).Assembly,
        typeof(CodeWarmUp).Assembly,
    ];

    private static Assembly[] ProxyAssemblies =>
    [
        typeof(Proxy.Endpoints.ProxyEndpoint).Assembly,
        typeof(CodeWarmUp).Assembly,
    ];

    /// <summary>
    /// <c>TEAL_CODE_WARM_UP=off</c> skips the warm-up. It only moves compiling earlier, and costs
    /// 2-4 s of one core at each start: the test suite starts teal serve and teal proxy some two
    /// hundred times on two cores and sets it, but for the tests that check it.
    /// </summary>
    public const string Switch = "TEAL_CODE_WARM_UP";

    private static void Start(ILogger logger, Assembly[] assemblies)
    {
        if (string.Equals(Environment.GetEnvironmentVariable(Switch), "off", StringComparison.OrdinalIgnoreCase))
        {
            LogOff(logger, Switch);
            return;
        }

        var thread = new Thread(() => Run(logger, assemblies))
        {
            IsBackground = true,
            Priority = ThreadPriority.BelowNormal,
            Name = "teal-code-warm-up",
        };
        thread.Start();
    }

    private static void Run(ILogger logger, Assembly[] assemblies)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            var compiled = CompileAll(assemblies);
            var elapsedMs = (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            LogWarmedUp(logger, compiled, elapsedMs);
        }
        catch (Exception ex)
        {
            // Its own thread: an exception here would end the process, and nothing in it is
            // needed for anything to work (what it did not compile is compiled at first use).
            LogWarmUpFailed(logger, ex);
        }
    }

    /// <summary>Compiles every non-generic method of Teal's server-side assemblies and its async methods' runtime code; returns how many.</summary>
    public static int CompileAll() => CompileAll(ServerAssemblies);

    /// <summary>Compiles every non-generic method of the proxy's assemblies and its async methods' runtime code; returns how many.</summary>
    public static int CompileAllForProxy() => CompileAll(ProxyAssemblies);

    private const BindingFlags Declared = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    private static int CompileAll(Assembly[] assemblies) => Compile(assemblies.SelectMany(Types));

    /// <summary>
    /// Compiles the methods of <paramref name="types"/> and, for async state machines among them,
    /// the runtime's code they run on, and for their log messages logging's code; returns how many.
    /// </summary>
    public static int Compile(IEnumerable<Type> types)
    {
        ArgumentNullException.ThrowIfNull(types);
        var compiled = 0;
        var resultTypes = new HashSet<Type>();
        var logStates = new HashSet<Type>();
        foreach (var type in types)
        {
            foreach (var state in LogStatesOf(type))
            {
                logStates.Add(state);
            }

            // Open generic types have no code until instantiated; nested types (async state
            // machines, lambdas' closures) are listed by GetTypes and compiled here too.
            if (type.ContainsGenericParameters)
            {
                continue;
            }

            foreach (var method in CodeOf(type))
            {
                compiled += Compile(method) ? 1 : 0;
            }

            if (type.IsValueType && typeof(IAsyncStateMachine).IsAssignableFrom(type))
            {
                compiled += CompileAsyncMachinery(type, resultTypes);
            }
        }

        return compiled + CompileLogging(logStates);
    }

    private static IEnumerable<MethodBase> CodeOf(Type type) =>
        type.GetMethods(Declared).Cast<MethodBase>().Concat(type.GetConstructors(Declared))
            .Where(m => !m.IsAbstract && !m.ContainsGenericParameters && m.GetMethodBody() is not null);

    /// <summary>
    /// The runtime's own code for one of Teal's async methods, instantiated over its state
    /// machine (a struct, so none of it is shared): the builder's Start, its
    /// AwaitUnsafeOnCompleted for each awaiter the method holds, and the box the state machine
    /// moves into when it first waits (its MoveNext, its execution-context callback). Compiling
    /// Teal's methods alone left these to the first switchover: ~340 of the ~600 methods a
    /// serve process compiled inside its first write pause.
    /// </summary>
    /// <param name="stateMachine">An async method's state machine (a struct).</param>
    /// <param name="resultTypes">Builders, tasks and awaiters of struct results compiled already: once per type, not per async method.</param>
    private static int CompileAsyncMachinery(Type stateMachine, HashSet<Type> resultTypes)
    {
        var builder = stateMachine.GetField("<>t__builder", BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic)?.FieldType;
        if (builder is null || VoidTaskResult is null)
        {
            return 0;
        }

        var awaiters = stateMachine.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic)
            .Where(f => f.Name.StartsWith("<>u__", StringComparison.Ordinal))
            .Select(f => f.FieldType)
            .Distinct()
            .ToList();

        // Task, ValueTask and void builders keep their state machine in AsyncTaskMethodBuilder<T>'s
        // box (T the result, VoidTaskResult for none); pooling builders have boxes of their own.
        var result = builder.IsGenericType ? builder.GetGenericArguments()[0] : VoidTaskResult;
        var core = builder.Name.StartsWith("Pooling", StringComparison.Ordinal) ? null : typeof(AsyncTaskMethodBuilder<>).MakeGenericType(result);
        var compiled = 0;
        foreach (var owner in new[] { builder, core, AsyncMethodBuilderCore }.OfType<Type>().Distinct())
        {
            foreach (var method in owner.GetMethods(Declared).Where(m => m.IsGenericMethodDefinition))
            {
                var arity = method.GetGenericArguments().Length;
                IEnumerable<Type[]> instantiations = (method.Name, arity) switch
                {
                    ("Start" or "GetStateMachineBox", 1) => [[stateMachine]],
                    ("AwaitUnsafeOnCompleted", 2) => awaiters.Select(a => new[] { a, stateMachine }),
                    ("AwaitUnsafeOnCompleted", 1) => awaiters.Select(a => new[] { a }),
                    _ => [],
                };
                foreach (var instantiation in instantiations)
                {
                    compiled += Compile(method, [.. owner.GetGenericArguments(), .. instantiation]) ? 1 : 0;
                }
            }
        }

        if (core?.GetNestedType("AsyncStateMachineBox`1", BindingFlags.NonPublic) is { } box)
        {
            var closed = box.MakeGenericType(result, stateMachine);
            foreach (var method in CodeOf(closed))
            {
                compiled += Compile(method, [result, stateMachine]) ? 1 : 0;
            }
        }

        if (result.IsValueType && result != VoidTaskResult)
        {
            // A struct result (a tuple, an outcome) has its own task and builder code too, once
            // per result type; a class result shares code every async method already ran.
            foreach (var type in new[] { builder, core, typeof(Task<>).MakeGenericType(result), typeof(TaskAwaiter<>).MakeGenericType(result) }.OfType<Type>().Where(resultTypes.Add))
            {
                foreach (var method in CodeOf(type).Where(m => type.Name != "Task`1" || m is ConstructorInfo || TaskCompletion.Contains(m.Name)))
                {
                    compiled += Compile(method, type.GetGenericArguments()) ? 1 : 0;
                }
            }
        }

        return compiled;
    }

    /// <summary>
    /// The state each of <paramref name="type"/>'s log messages hands the logger: a
    /// <c>[LoggerMessage]</c> method of up to six arguments calls the delegate
    /// <c>LoggerMessage.Define</c> made (a static field, <c>Action&lt;ILogger, T1…Tn,
    /// Exception?&gt;</c>), which logs a <c>LoggerMessage.LogValues&lt;T1…Tn&gt;</c>; a message of
    /// more arguments logs a struct the generator writes beside it.
    /// </summary>
    private static IEnumerable<Type> LogStatesOf(Type type)
    {
        if (type.ContainsGenericParameters)
        {
            yield break;
        }

        if (type.IsValueType && typeof(IReadOnlyList<KeyValuePair<string, object?>>).IsAssignableFrom(type))
        {
            yield return type;
        }

        foreach (var field in type.GetFields(BindingFlags.Static | BindingFlags.NonPublic | BindingFlags.Public | BindingFlags.DeclaredOnly))
        {
            if (field.FieldType is { IsGenericType: true } action
                && action.Name.StartsWith("Action`", StringComparison.Ordinal)
                && action.GetGenericArguments() is [var logger, .. var arguments, var exception]
                && logger == typeof(ILogger) && exception == typeof(Exception)
                && LogValues(arguments) is { } state)
            {
                yield return state;
            }
        }
    }

    private static Type? LogValues(Type[] arguments) =>
        arguments.Length == 0
            ? typeof(LoggerMessage).GetNestedType("LogValues", BindingFlags.NonPublic)
            : typeof(LoggerMessage).GetNestedType($"LogValues`{arguments.Length}", BindingFlags.NonPublic) is { } definition ? TryClose(definition, arguments) : null;

    /// <summary>
    /// Logging's code for each log message's state: the state's own (and the closure
    /// <c>LoggerMessage.Define</c> made over its argument types), and every method of the logging
    /// pipeline that is generic over it — the logger, each provider's logger, the console
    /// formatter, the entry it formats. A value type among a message's arguments makes all of it
    /// code of its own that no other message shares: before this, ~90 of the ~240 methods a serve's
    /// first switchover compiled inside its write pause were these, for the few lines it logs then.
    /// </summary>
    private static int CompileLogging(HashSet<Type> states)
    {
        if (states.Count == 0)
        {
            return 0;
        }

        var pipeline = LoggingPipeline();
        var compiled = LogValuesFormatter is null ? 0 : CodeOf(LogValuesFormatter).Count(m => Compile(m));
        var formatting = LogValuesFormatter?.GetMethods(Declared).Where(m => m.IsGenericMethodDefinition).ToList() ?? [];
        foreach (var state in states)
        {
            var arguments = state.IsGenericType ? state.GetGenericArguments() : [];
            IEnumerable<Type> closed = [state, typeof(LogEntry<>).MakeGenericType(state)];
            if (state.IsGenericType)
            {
                // LogValues' nested callback class, and Define's closure over the same argument types.
                closed = closed
                    .Concat(state.GetGenericTypeDefinition().GetNestedTypes(BindingFlags.NonPublic).Where(n => n.GetGenericArguments().Length == arguments.Length).Select(n => TryClose(n, arguments)))
                    .Concat(typeof(LoggerMessage).GetNestedTypes(BindingFlags.NonPublic).Where(n => n.Name.StartsWith("<>c__DisplayClass", StringComparison.Ordinal) && n.GetGenericArguments().Length == arguments.Length).Select(n => TryClose(n, arguments)))
                    .OfType<Type>();
            }

            foreach (var type in closed)
            {
                compiled += CodeOf(type).Count(m => Compile(m, type.IsGenericType ? type.GetGenericArguments() : null));
            }

            foreach (var method in pipeline)
            {
                compiled += Compile(method, [.. method.DeclaringType!.GetGenericArguments(), state]) ? 1 : 0;
            }

            // Formatting the message is generic over its arguments too (a Format per count, and
            // one check per argument).
            foreach (var method in formatting)
            {
                var arity = method.GetGenericArguments().Length;
                IEnumerable<Type[]> instantiations = arity == arguments.Length && method.Name == "Format" ? [arguments]
                    : arity == 1 && method.Name != "Format" ? arguments.Select(a => new[] { a })
                    : [];
                compiled += instantiations.Count(i => Compile(method, i));
            }
        }

        return compiled;
    }

    /// <summary>
    /// The logging pipeline's methods generic over a log state, found in the logging assemblies
    /// loaded (so in the process's own configuration): <c>ILogger.Log&lt;TState&gt;</c> of every
    /// logger (the category's, the factory's, each provider's), the factory logger's own generic
    /// helpers, and <c>ConsoleFormatter.Write&lt;TState&gt;</c> of every console formatter.
    /// </summary>
    private static List<MethodInfo> LoggingPipeline()
    {
        List<MethodInfo> pipeline = [];
        var assemblies = AppDomain.CurrentDomain.GetAssemblies().Where(a => a.GetName().Name?.StartsWith("Microsoft.Extensions.Logging", StringComparison.Ordinal) == true);
        foreach (var type in assemblies.SelectMany(Types).Where(t => t.IsClass && !t.IsAbstract))
        {
            // A generic logger (the category's Logger<T>) over a class shares its code with every T.
            if ((type.ContainsGenericParameters ? TryClose(type, [.. type.GetGenericArguments().Select(_ => typeof(object))]) : type) is not { } closed)
            {
                continue;
            }

            if (typeof(ILogger).IsAssignableFrom(closed))
            {
                pipeline.AddRange(closed.GetInterfaceMap(typeof(ILogger)).TargetMethods.Where(m => m.IsGenericMethodDefinition && m.Name.EndsWith("Log", StringComparison.Ordinal)));
                pipeline.AddRange(closed.GetMethods(Declared).Where(m => m.IsGenericMethodDefinition && m.GetGenericArguments().Length == 1 && m.Name.Contains("LoggerLog", StringComparison.Ordinal)));
            }

            if (closed.IsSubclassOf(typeof(ConsoleFormatter)))
            {
                pipeline.AddRange(closed.GetMethods(Declared).Where(m => m.IsGenericMethodDefinition && m.Name == nameof(ConsoleFormatter.Write)));
            }
        }

        return pipeline;
    }

    private static Type? TryClose(Type definition, Type[] arguments)
    {
        try
        {
            return definition.MakeGenericType(arguments);
        }
        catch (ArgumentException)
        {
            return null; // Constraints the arguments do not meet.
        }
    }

    private static readonly Type? LogValuesFormatter = typeof(LoggerMessage).Assembly.GetType("Microsoft.Extensions.Logging.LogValuesFormatter");

    // What completing and awaiting a Task<T> runs, of its many methods.
    private static readonly HashSet<string> TaskCompletion = ["TrySetResult", "TrySetException", "GetAwaiter", "get_Result", "get_ResultOnSuccess", "GetResultCore", "ConfigureAwait"];

    private static readonly Type? VoidTaskResult = typeof(Task).Assembly.GetType("System.Threading.Tasks.VoidTaskResult");

    private static readonly Type? AsyncMethodBuilderCore = typeof(Task).Assembly.GetType("System.Runtime.CompilerServices.AsyncMethodBuilderCore");

    /// <param name="method">A method with code.</param>
    /// <param name="instantiation">For a generic method or a method of a generic type: the type's arguments, then the method's.</param>
    private static bool Compile(MethodBase method, Type[]? instantiation = null)
    {
        try
        {
            // Under tiered compilation PrepareMethod compiles only a method whose entry point is
            // still the prestub; a virtual method of a class (every interface implementation: the
            // steps' ExecuteAsync, the endpoints' DrainAsync) has none until something asks for
            // it, so without this it was left to its first call, inside the write pause. (A
            // generic method's definition has no entry point to ask for: its instantiation does.)
            if (!method.IsGenericMethodDefinition)
            {
                method.MethodHandle.GetFunctionPointer();
            }

            RuntimeHelpers.PrepareMethod(method.MethodHandle, instantiation?.Select(t => t.TypeHandle).ToArray());
            return true;
        }
        catch (Exception ex) when (ex is ArgumentException or BadImageFormatException or TypeLoadException or FileNotFoundException or MissingMethodException or NotSupportedException or InvalidOperationException)
        {
            // A method whose dependencies are absent, or an awaiter a builder's constraints do not
            // take, is compiled when (if ever) it runs.
            return false;
        }
    }

    private static Type[] Types(Assembly assembly)
    {
        try
        {
            return assembly.GetTypes();
        }
        catch (ReflectionTypeLoadException ex)
        {
            return [.. ex.Types.OfType<Type>()];
        }
    }

    [LoggerMessage(EventId = 1903, Level = LogLevel.Warning, Message = "Code warm-up stopped; what it did not compile is compiled at first use, the first switchover's write pause included")]
    private static partial void LogWarmUpFailed(ILogger logger, Exception exception);

    [LoggerMessage(EventId = 1902, Level = LogLevel.Information, Message = "Code warm-up off ({Switch}=off): the first switchover compiles what it runs")]
    private static partial void LogOff(ILogger logger, string @switch);

    [LoggerMessage(EventId = 1901, Level = LogLevel.Information, Message = "Compiled {Methods} methods ahead of use in {Milliseconds} ms")]
    private static partial void LogWarmedUp(ILogger logger, int methods, long milliseconds);
}
