namespace Teal.Proxy.Hosting;

/// <summary>Process-wide settings the proxy needs; call <see cref="ConfigureProcess"/> first thing in <c>Main</c>.</summary>
public static class ProxyRuntime
{
    /// <summary>Worker threads the pool keeps ready, so a burst of connections is not throttled by thread injection.</summary>
    public const int MinWorkerThreads = 64;

    /// <summary>
    /// Raises the thread pool's floor: after a resume, hundreds of held connections continue at
    /// once, and the pool otherwise adds threads one or two per second once past its minimum.
    /// File descriptors need nothing here: the .NET runtime raises the soft limit to the hard
    /// one at start, which on Debian is far above the two sockets per connection.
    /// </summary>
    public static void ConfigureProcess()
    {
        ThreadPool.GetMinThreads(out var workers, out var completionPorts);
        ThreadPool.SetMinThreads(Math.Max(workers, MinWorkerThreads), Math.Max(completionPorts, MinWorkerThreads));
    }
}
