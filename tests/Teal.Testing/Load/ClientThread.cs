namespace Teal.Testing.Load;

/// <summary>
/// A client's loop on a thread of its own, with blocking calls. A test that needs a client at
/// work while a pause or a drain happens (the proxy judges sessions by what their clients sent
/// lately) must not depend on the test process's thread pool: in the full suite, with other tests
/// loading it, an async loop was twice left unscheduled for 200 ms, never when run alone.
/// </summary>
public static class ClientThread
{
    /// <summary>Runs <paramref name="loop"/> on a new background thread; its result or exception ends the task.</summary>
    public static Task<T> Start<T>(string name, Func<T> loop)
    {
        ArgumentNullException.ThrowIfNull(loop);
        var done = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        var client = new Thread(() =>
        {
            try
            {
                done.SetResult(loop());
            }
#pragma warning disable CA1031 // Handed to the test through the task.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                done.SetException(ex);
            }
        })
        { IsBackground = true, Name = name };
        client.Start();
        return done.Task;
    }
}
