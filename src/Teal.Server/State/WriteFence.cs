using Teal.Core.Errors;

namespace Teal.Server.State;

/// <summary>
/// Who may write to a shared (PostgreSQL) state store from this process. The leader proves it at
/// every write transaction with the backend pid of the session holding the leader lock; a standby
/// is refused before it opens one. A store used alone (tests, a single machine) is unfenced.
/// </summary>
public sealed record WriteFence
{
    private WriteFence(int? leaderBackend, bool standby, string? leaderUrl)
    {
        LeaderBackend = leaderBackend;
        IsStandby = standby;
        LeaderUrl = leaderUrl;
    }

    public static WriteFence Unfenced { get; } = new(null, standby: false, null);

    /// <summary>The leader: writes run the guard with the lock session's backend pid.</summary>
    public static WriteFence Leader(int lockBackend) => new(lockBackend, standby: false, null);

    /// <summary>A standby: every write is refused, naming the leader when one is known.</summary>
    public static WriteFence Standby(string? leaderUrl) => new(null, standby: true, leaderUrl);

    public int? LeaderBackend { get; }

    public bool IsStandby { get; }

    public string? LeaderUrl { get; }

    /// <summary>The refusal a standby gives to a change (503: another machine makes changes).</summary>
    public static TealException NotLeader(string? leaderUrl, Exception? inner = null) =>
        leaderUrl is null
            ? new TealException(
                "server.no-leader",
                "this teal serve is a standby and no control plane leads at the moment",
                "retry in a few seconds: a standby takes over when the leader's lock is free",
                inner)
            { Kind = TealErrorKind.Unavailable }
            : new TealException(
                "server.not-leader",
                $"this teal serve is a standby; the leader at {leaderUrl} makes changes",
                $"send changes to the leader (--server {leaderUrl} or TEAL_SERVER); this server takes over if the leader stops",
                inner)
            { Kind = TealErrorKind.Unavailable };

    public void ThrowIfStandby()
    {
        if (IsStandby)
        {
            throw NotLeader(LeaderUrl);
        }
    }
}
