namespace Teal.Server.Hosting;

/// <summary>
/// Whether this <c>teal serve</c> leads the control plane. With the embedded SQLite store it
/// always does (the data directory's lock makes it the only one); with a shared PostgreSQL store
/// it leads once it holds the leader lock, and until then it is a standby that serves reads.
/// What only the leader does (startup recovery, monitors, switchovers, endpoints) waits for
/// <see cref="Gained"/> and stops at <see cref="Lost"/>.
/// </summary>
public sealed class Leadership : IDisposable
{
    private readonly TaskCompletionSource _gained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _lost = new();
    private volatile string? _leaderUrl;

    private Leadership(bool shared) => Shared = shared;

    /// <summary>The only control plane on its state (SQLite): leader from the start.</summary>
    public static Leadership Alone()
    {
        var leadership = new Leadership(shared: false);
        leadership._gained.SetResult();
        return leadership;
    }

    /// <summary>One of several control planes on a shared state store: a standby until elected.</summary>
    public static Leadership Elected() => new(shared: true);

    /// <summary>True when the state store is shared and leadership is elected.</summary>
    public bool Shared { get; }

    public bool IsLeader => _gained.Task.IsCompleted && !_lost.IsCancellationRequested;

    /// <summary>"leader" or "standby", as the health check and the log say it.</summary>
    public string Role => IsLeader ? "leader" : "standby";

    /// <summary>The leader's URL as it recorded it (this server's own when it leads; null when unknown).</summary>
    public string? LeaderUrl => _leaderUrl;

    /// <summary>Completes when this server becomes the leader.</summary>
    public Task Gained => _gained.Task;

    /// <summary>Cancelled when this server loses leadership (its lock session is gone); it then stops.</summary>
    public CancellationToken Lost => _lost.Token;

    /// <summary>Why leadership was lost (null while it was not).</summary>
    public string? LostReason { get; private set; }

    public void Dispose() => _lost.Dispose();

    internal void Follow(string? leaderUrl) => _leaderUrl = leaderUrl;

    internal void Lead(string url)
    {
        _leaderUrl = url;
        _gained.TrySetResult();
    }

    internal void Lose(string reason)
    {
        LostReason = reason;
        _leaderUrl = null;
        _lost.Cancel();
    }
}
