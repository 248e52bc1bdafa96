namespace Teal.Bench.Faults;

/// <summary>A stretch of time in which one side acknowledged the direct writer's commits.</summary>
public sealed record WritableInterval(string Side, DateTimeOffset From, DateTimeOffset To, int Commits);

/// <summary>
/// Which sides accepted writes from a client (not Teal) over the round, and whether the invariant
/// held: never two writable sides. After a completed switchover blue's last acknowledged commit
/// must come before green's first; after a rollback green must never have acknowledged one.
/// </summary>
public sealed record WritableSides(IReadOnlyList<WritableInterval> Intervals, DateTimeOffset? BlueLastCommit, DateTimeOffset? GreenFirstCommit, bool TwoWritableSides)
{
    // Commits further apart than this start a new interval (the writer tries every 50 ms).
    private static readonly TimeSpan Break = TimeSpan.FromMilliseconds(500);

    public static WritableSides From(IReadOnlyList<(long N, DateTimeOffset At)> blue, IReadOnlyList<(long N, DateTimeOffset At)> green, bool completed)
    {
        DateTimeOffset? blueLast = blue.Count > 0 ? blue.Max(a => a.At) : null;
        DateTimeOffset? greenFirst = green.Count > 0 ? green.Min(a => a.At) : null;
        var two = greenFirst is { } g && ((blueLast is { } b && b >= g) || !completed);
        return new WritableSides([.. IntervalsOf("blue", blue), .. IntervalsOf("green", green)], blueLast, greenFirst, two);
    }

    private static IEnumerable<WritableInterval> IntervalsOf(string side, IReadOnlyList<(long N, DateTimeOffset At)> acked)
    {
        var sorted = acked.Select(a => a.At).Order().ToList();
        var start = 0;
        for (var i = 1; i <= sorted.Count; i++)
        {
            if (i == sorted.Count || sorted[i] - sorted[i - 1] > Break)
            {
                yield return new WritableInterval(side, sorted[start], sorted[i - 1], i - start);
                start = i;
            }
        }
    }
}

/// <summary>One round: the crash moment, what recovery decided, and the invariants.</summary>
/// <param name="CrashDuring"><c>steps</c>: killed after <c>teal switchover</c> returned (the steps run in the server); <c>guardrails</c>: killed while the command still ran its guardrails.</param>
/// <param name="CrashAfterMs">The random delay drawn for the kill, from that moment.</param>
/// <param name="KilledAtMs">When the kill actually happened, from that moment.</param>
/// <param name="PhaseAfterRecovery">The switchover phase <c>teal show</c> reported once recovery decided.</param>
/// <param name="Converged">Recovery decided (the deployment left SWITCHOVER_IN_PROGRESS) within three minutes.</param>
/// <param name="EndpointServesAfterRecovery">The probe committed through the endpoint after recovery decided.</param>
/// <param name="ProbeMissing">Probe commits acknowledged through the endpoint that the writer does not have.</param>
/// <param name="BlueDirectMissing">Commits blue acknowledged to its direct client that the writer does not have.</param>
/// <param name="GreenDirectMissing">Commits green acknowledged to its direct client that the writer does not have.</param>
public sealed record RoundResult(
    int Round,
    string Deployment,
    string CrashDuring,
    int CrashAfterMs,
    long KilledAtMs,
    string? PhaseAfterRecovery,
    string Outcome,
    bool Converged,
    long ConvergeMs,
    bool EndpointServesAfterRecovery,
    WritableSides? WritableSides,
    int ProbeAcked,
    long ProbeMissing,
    int BlueDirectAcked,
    long BlueDirectMissing,
    int GreenDirectAcked,
    long GreenDirectMissing,
    int ProbeErrors,
    int PgbenchAbortedClients,
    string? StatusReason,
    string? Error)
{
    public long AcknowledgedWritesMissing => ProbeMissing + BlueDirectMissing + GreenDirectMissing;

    public static RoundResult BenchError(int round, string deployment, string error) =>
        new(round, deployment, "-", 0, 0, null, "BENCH_ERROR", false, 0, false, null, 0, 0, 0, 0, 0, 0, 0, 0, null, error);
}
