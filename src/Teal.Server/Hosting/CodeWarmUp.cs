using System.Diagnostics;
using System.Reflection;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;

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
    // engine and PgBouncer driver, the proxy, the server.
    private static Assembly[] ServerAssemblies =>
    [
        typeof(Core.Switchover.SwitchoverExecutor).Assembly,
        typeof(Postgres.PgBouncer.PgBouncerEndpoint).Assembly,
        typeof(Proxy.Endpoints.ProxyEndpoint).Assembly,
        typeof(CodeWarmUp).Assembly,
    ];

    private static Assembly[] ProxyAssemblies =>
    [
        typeof(Proxy.Endpoints.ProxyEndpoint).Assembly,
        typeof(CodeWarmUp).Assembly,
    ];

    private static void Start(ILogger logger, Assembly[] assemblies)
    {
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
        var compiled = CompileAll(assemblies);
        var elapsedMs = (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds;
        LogWarmedUp(logger, compiled, elapsedMs);
    }

    /// <summary>Compiles every non-generic method of Teal's server-side assemblies; returns how many.</summary>
    public static int CompileAll() => CompileAll(ServerAssemblies);

    /// <summary>Compiles every non-generic method of the proxy's assemblies; returns how many.</summary>
    public static int CompileAllForProxy() => CompileAll(ProxyAssemblies);

    private static int CompileAll(Assembly[] assemblies)
    {
        var compiled = 0;
        foreach (var type in assemblies.SelectMany(Types))
        {
            // Open generic types have no code until instantiated; nested types (async state
            // machines, lambdas' closures) are listed by GetTypes and compiled here too.
            if (type.ContainsGenericParameters)
            {
                continue;
            }

            const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
            foreach (var method in type.GetMethods(all).Cast<MethodBase>().Concat(type.GetConstructors(all)))
            {
                if (method.IsAbstract || method.ContainsGenericParameters || method.GetMethodBody() is null)
                {
                    continue;
                }

                try
                {
                    RuntimeHelpers.PrepareMethod(method.MethodHandle);
                    compiled++;
                }
                catch (Exception ex) when (ex is ArgumentException or BadImageFormatException or TypeLoadException or FileNotFoundException or MissingMethodException)
                {
                    // A method whose dependencies are absent is compiled when (if ever) it runs.
                }
            }
        }

        return compiled;
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

    [LoggerMessage(EventId = 1901, Level = LogLevel.Information, Message = "Compiled {Methods} methods ahead of use in {Milliseconds} ms")]
    private static partial void LogWarmedUp(ILogger logger, int methods, long milliseconds);
}
