using Teal.Core.Endpoints;

namespace Teal.Postgres.PgBouncer;

/// <summary>
/// A console connection kept open between uses, one user at a time, reopened after it broke.
/// The endpoint keeps one for its operations and one for stats, so that a stats read never
/// queues in front of a flip or a resume.
/// </summary>
internal sealed class PgBouncerConsoleSlot(PgBouncerSpec spec, string? password, string endpoint) : IAsyncDisposable
{
    private readonly SemaphoreSlim _lock = new(1, 1);
    private PgBouncerConsole? _console;
    private bool _disposed;

    public async Task<T> UseAsync<T>(Func<PgBouncerConsole, Task<T>> action, CancellationToken cancellationToken)
    {
        await _lock.WaitAsync(cancellationToken);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_console is null || _console.IsBroken)
            {
                if (_console is not null)
                {
                    await _console.DisposeAsync();
                    _console = null;
                }

                _console = await PgBouncerConsole.OpenAsync(spec, password, endpoint, cancellationToken);
            }

            return await action(_console);
        }
        finally
        {
            _lock.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _lock.WaitAsync();
        try
        {
            _disposed = true;
            if (_console is not null)
            {
                await _console.DisposeAsync();
                _console = null;
            }
        }
        finally
        {
            _lock.Release();
        }
    }
}
