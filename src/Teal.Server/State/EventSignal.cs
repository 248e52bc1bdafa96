namespace Teal.Server.State;

/// <summary>
/// Wakes the API's long-polling event readers when an event is appended, so <c>teal events
/// --follow</c> sees it at once instead of at the next poll.
/// </summary>
public sealed class EventSignal
{
    private TaskCompletionSource _next = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes at the next append. Take it before reading, so an append in between is not missed.</summary>
    public Task Next => Volatile.Read(ref _next).Task;

    public void Pulse() =>
        Interlocked.Exchange(ref _next, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
}
