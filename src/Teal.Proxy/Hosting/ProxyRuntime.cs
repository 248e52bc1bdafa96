namespace Teal.Proxy.Hosting;

/// <summary>Process-wide settings the proxy needs; call <see cref="ConfigureProcess"/> first thing in <c>Main</c>.</summary>
public static class ProxyRuntime
{
    /// <summary>Worker threads the pool keeps ready, so a burst of connections is not throttled by thread injection.</summary>
    public const int MinWorkerThreads = 64;

    /// <summary>The runtime switch that runs socket continuations on the epoll thread that saw the event.</summary>
    public const string InlineCompletionsVariable = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";

    /// <summary>The runtime setting for how many epoll threads serve sockets.</summary>
    public const string SocketThreadsVariable = "DOTNET_SYSTEM_NET_SOCKETS_THREAD_COUNT";

    /// <summary>
    /// Prepares the process for hundreds of proxied connections. Must run before the first socket
    /// is created, because the runtime reads the socket settings once.
    /// <list type="bullet">
    /// <item>Inline socket completions (unless the environment already sets them): a proxied
    /// round trip is four socket events, and handing each to the thread pool costs more than the
    /// forwarding itself — measured here, pgbench -S through the proxy ran at 0.45 of direct with
    /// the hand-off and above HAProxy without it. The price: code awaiting a socket in this
    /// process must not block its continuation (no sync-over-async), which Teal's code keeps.</item>
    /// <item>One epoll thread per core: with completions inline, those threads do all the
    /// forwarding, and the runtime's default for small machines is a single one. On two cores,
    /// pgbench -S with 32 clients ran faster with two in 5 of 6 back-to-back pairs.</item>
    /// <item>A higher thread-pool floor: after a resume hundreds of held connections continue at
    /// once, and past its minimum the pool adds threads only one or two per second.</item>
    /// </list>
    /// File descriptors need nothing here: the .NET runtime raises the soft limit to the hard one
    /// at start, far above two sockets per connection.
    /// </summary>
    public static void ConfigureProcess(bool inlineSocketCompletions = true)
    {
        if (inlineSocketCompletions && Environment.GetEnvironmentVariable(InlineCompletionsVariable) is null)
        {
            Environment.SetEnvironmentVariable(InlineCompletionsVariable, "1");
            if (Environment.GetEnvironmentVariable(SocketThreadsVariable) is null)
            {
                Environment.SetEnvironmentVariable(SocketThreadsVariable, Environment.ProcessorCount.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }
        }

        ThreadPool.GetMinThreads(out var workers, out var completionPorts);
        ThreadPool.SetMinThreads(Math.Max(workers, MinWorkerThreads), Math.Max(completionPorts, MinWorkerThreads));
    }
}
