using Microsoft.Extensions.Logging;

namespace Teal.Core.Hosting;

/// <summary>
/// Long-running work started by API calls (a create workflow, a switchover), keyed so that it
/// can be found and cancelled (delete cancels a create in progress), and stopped together when
/// Teal shuts down.
/// </summary>
public sealed partial class BackgroundWork(ILogger<BackgroundWork> logger) : IAsyncDisposable
{
    private readonly CancellationTokenSource _stopping = new();
    private readonly Dictionary<string, (Task Task, CancellationTokenSource Cancel)> _running = [];

    public CancellationToken Stopping => _stopping.Token;

    /// <summary>Starts <paramref name="work"/> under <paramref name="key"/> unless work with that key runs already.</summary>
    public bool TryStart(string key, Func<CancellationToken, Task> work)
    {
        lock (_running)
        {
            if (_stopping.IsCancellationRequested || _running.ContainsKey(key))
            {
                return false;
            }

            var cancel = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
            // The entry is added under the lock before the work can finish and remove it.
            _running[key] = (Task.Run(() => RunAsync(key, work, cancel)), cancel);
            return true;
        }
    }

    public bool IsRunning(string key)
    {
        lock (_running)
        {
            return _running.ContainsKey(key);
        }
    }

    /// <summary>Cancels the work under <paramref name="key"/> and waits for it to end.</summary>
    public async Task CancelAsync(string key)
    {
        (Task Task, CancellationTokenSource Cancel) entry;
        lock (_running)
        {
            if (!_running.TryGetValue(key, out entry))
            {
                return;
            }

            entry.Cancel.Cancel();
        }

        await entry.Task;
    }

    /// <summary>Waits for the work under <paramref name="key"/> to end (tests, shutdown).</summary>
    public Task WaitAsync(string key)
    {
        lock (_running)
        {
            return _running.TryGetValue(key, out var entry) ? entry.Task : Task.CompletedTask;
        }
    }

    /// <summary>
    /// Cancels every running work and refuses new work, without waiting: a control plane that
    /// lost leadership must not act on what it was doing while it shuts down.
    /// </summary>
    public void CancelAll()
    {
        lock (_running)
        {
            _stopping.Cancel();
        }
    }

    public async ValueTask DisposeAsync()
    {
        Task[] running;
        lock (_running)
        {
            _stopping.Cancel();
            running = _running.Values.Select(e => e.Task).ToArray();
        }

        await Task.WhenAll(running);
        _stopping.Dispose();
    }

    private async Task RunAsync(string key, Func<CancellationToken, Task> work, CancellationTokenSource cancel)
    {
        try
        {
            await work(cancel.Token);
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            LogWorkFailed(ex, key);
        }
        finally
        {
            lock (_running)
            {
                _running.Remove(key);
            }

            cancel.Dispose();
        }
    }

    [LoggerMessage(EventId = 1000, Level = LogLevel.Error, Message = "Background work {Key} failed")]
    private partial void LogWorkFailed(Exception exception, string key);
}
