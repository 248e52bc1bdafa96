using System.Text.Json;

namespace Teal.Bench.Switchover;

/// <summary>One phase of Teal's switchover as <c>teal switchover --output json</c> reports it.</summary>
public sealed record PhaseTiming(string Step, string Result, double Milliseconds);

/// <summary>One switchover under load, through one endpoint.</summary>
/// <param name="Completed">The deployment reached SWITCHOVER_COMPLETED.</param>
/// <param name="Status">The deployment's status after the switchover command returned.</param>
/// <param name="Error">The CLI's output when the switchover did not complete; null otherwise.</param>
/// <param name="LongestGapMs">Longest time between two acknowledged probe commits over the whole load window (including stalls that have nothing to do with the switchover).</param>
/// <param name="SwitchoverGapMs">Longest time between two consecutive acknowledged probe commits whose interval overlaps Teal's pause (<c>pausedAt</c>–<c>resumedAt</c>): PRODUCT.md §11's write pause at switchover.</param>
/// <param name="ProbeCoveredSwitchover">The probe had acknowledged commits before the switchover began and after it ended, so the gap is real.</param>
/// <param name="LostWrites">Acknowledged probe numbers missing on the writer <c>app</c> after the switchover.</param>
/// <param name="PgbenchAbortedClients">pgbench clients that gave up (each is an application error).</param>
/// <param name="PgbenchErrors">pgbench's <c>error:</c> lines (aborts and failed statements).</param>
/// <param name="GapStartedBeforePauseMs">How long before Teal paused the endpoints the probe's longest gap began (negative: after).</param>
/// <param name="GapEndedAfterResumeMs">How long after Teal resumed the endpoints the probe's longest gap ended: the time to reach green and commit.</param>
public sealed record SwitchoverRun(
    int Run,
    string Deployment,
    string SourceVersion,
    bool Completed,
    string Status,
    string? Error,
    double LongestGapMs,
    bool ProbeCoveredSwitchover,
    long ProbeAcked,
    int ProbeErrors,
    IReadOnlyList<string> ProbeErrorSamples,
    long LostWrites,
    int PgbenchAbortedClients,
    int PgbenchErrors,
    IReadOnlyList<string> PgbenchErrorSamples,
    double? WritePauseMilliseconds,
    long SwitchoverCommandMilliseconds,
    double CreateSeconds,
    IReadOnlyList<PhaseTiming> Phases,
    double? GapStartedBeforePauseMs = null,
    double? GapEndedAfterResumeMs = null,
    double? SwitchoverGapMs = null)
{
    /// <summary>Errors an application would have seen: probe errors plus pgbench clients that aborted (MariaDB: plus the load's failed transactions).</summary>
    public int ClientErrors => ProbeErrors + PgbenchAbortedClients + (LoadErrors ?? 0);

    /// <summary>MariaDB runs (no pgbench): the load's committed transactions (Teal.Bench.Probe <c>--load</c>).</summary>
    public long? LoadCommitted { get; init; }

    /// <summary>MariaDB runs: the load's failed attempts (statement or connection errors, each followed by a reconnect).</summary>
    public int? LoadErrors { get; init; }

    public IReadOnlyList<string>? LoadErrorSamples { get; init; }

    /// <summary>MariaDB runs: the application's account got an error writing to the old blue directly after the switchover.</summary>
    public bool? OldBlueRefusesWrites { get; init; }
}

/// <summary>The PRODUCT.md §11 bars for one endpoint kind; null where the run gives no basis (no baseline).</summary>
public sealed record Bars(
    bool MaxGapAtMost500Ms,
    bool MedianGapAtMost200Ms,
    bool? MaxGapBelowHandrolled,
    bool? MedianGapBelowHandrolled,
    bool NoLostWrites,
    bool? NoClientErrors,
    bool AllSwitchoversCompleted,
    bool AtLeast10Switchovers)
{
    /// <summary>Through the proxy with sessions kept (issue bar for moved sessions): median ≤ 100 ms; null for other kinds.</summary>
    public bool? MedianGapAtMost100Ms { get; init; }

    /// <summary>Through the proxy with sessions kept: max ≤ 250 ms; null for other kinds.</summary>
    public bool? MaxGapAtMost250Ms { get; init; }

    /// <summary>MariaDB: after every switchover the application's account could not write to the old blue; null where not checked.</summary>
    public bool? OldBlueRefusesWrites { get; init; }

    /// <summary>Every bar that applies holds.</summary>
    public bool Met => MaxGapAtMost500Ms && MedianGapAtMost200Ms && MaxGapBelowHandrolled != false && MedianGapBelowHandrolled != false
        && NoLostWrites && NoClientErrors != false && AllSwitchoversCompleted && AtLeast10Switchovers
        && MedianGapAtMost100Ms != false && MaxGapAtMost250Ms != false && OldBlueRefusesWrites != false;
}

/// <summary>All switchovers through one endpoint kind, summarized.</summary>
/// <param name="MaxGapMs">Over completed rounds, of each round's gap at the switchover (<see cref="SwitchoverRun.SwitchoverGapMs"/>): the bar.</param>
/// <param name="Setup">What failed before the first switchover, if anything (then there are no runs).</param>
public sealed record KindResult(
    string Endpoint,
    int Requested,
    int Completed,
    double? MaxGapMs,
    double? MedianGapMs,
    int ClientErrors,
    int ProbeErrors,
    int PgbenchAbortedClients,
    long LostWrites,
    double? MedianWritePauseMs,
    double? MaxWritePauseMs,
    IReadOnlyDictionary<string, double> PhasesMedianMs,
    Bars Bars,
    string? Setup,
    IReadOnlyList<SwitchoverRun> Switchovers)
{
    /// <summary>Over each round's whole load window, stalls away from the switchover included (reported, not a bar).</summary>
    public double? MaxGapWholeWindowMs { get; init; }

    public double? MedianGapWholeWindowMs { get; init; }

    /// <summary>Summarizes <paramref name="runs"/> against the bars (<paramref name="baseline"/>: the hand-rolled run's gaps, when measured).</summary>
    public static KindResult From(string endpoint, int requested, IReadOnlyList<SwitchoverRun> runs, Baseline? baseline, string? setup)
    {
        // Only completed switchovers have a gap worth comparing; a rolled-back one is reported by
        // AllSwitchoversCompleted and its error text.
        // The gap at the switchover is the bar; a run whose pause times are unknown counts its
        // longest gap over the whole window instead (never smaller).
        var gaps = runs.Where(r => r.Completed).Select(r => r.SwitchoverGapMs ?? r.LongestGapMs).ToList();
        var maxGap = gaps.Count > 0 ? gaps.Max() : (double?)null;
        var medianGap = gaps.Count > 0 ? Median(gaps) : (double?)null;
        var windowGaps = runs.Where(r => r.Completed).Select(r => r.LongestGapMs).ToList();
        var pauses = runs.Where(r => r.WritePauseMilliseconds is not null).Select(r => r.WritePauseMilliseconds!.Value).ToList();
        var phases = runs.Where(r => r.Completed)
            .SelectMany(r => r.Phases)
            .GroupBy(p => p.Step)
            .ToDictionary(g => g.Key, g => Math.Round(Median([.. g.Select(p => p.Milliseconds)]), 1));
        var clientErrors = runs.Sum(r => r.ClientErrors);
        var lost = runs.Sum(r => r.LostWrites);
        // Kinds whose clients keep their connections across the switchover: PgBouncer's
        // transaction pooling, and Teal's proxy moving sessions to green.
        var keepsSessions = endpoint is "pgbouncer" or "proxy-sessions" or "proxy-prepared" or SwitchoverBench.TwoProxies;
        var movesSessions = endpoint is "proxy-sessions" or "proxy-prepared" or SwitchoverBench.TwoProxies;
        var bars = new Bars(
            MaxGapAtMost500Ms: maxGap is <= 500,
            MedianGapAtMost200Ms: medianGap is <= 200,
            MaxGapBelowHandrolled: baseline is null || maxGap is null ? null : maxGap < baseline.LongestGapMs,
            MedianGapBelowHandrolled: baseline is null || medianGap is null ? null : medianGap < baseline.MedianGapMs,
            NoLostWrites: lost == 0,
            // Zero client errors is the bar wherever clients keep their sessions; with -C through
            // Teal's proxy (a connection per transaction) they are counted and reported.
            NoClientErrors: keepsSessions ? clientErrors == 0 : null,
            AllSwitchoversCompleted: runs.Count == requested && runs.All(r => r.Completed),
            AtLeast10Switchovers: runs.Count(r => r.Completed) >= 10)
        {
            MedianGapAtMost100Ms = movesSessions ? medianGap is <= 100 : null,
            MaxGapAtMost250Ms = movesSessions ? maxGap is <= 250 : null,
            // Checked by the MariaDB runs only (the PostgreSQL end-to-end tests cover it there).
            OldBlueRefusesWrites = runs.Any(r => r.OldBlueRefusesWrites is not null) ? runs.All(r => r.OldBlueRefusesWrites != false) : null,
        };
        return new KindResult(
            endpoint,
            requested,
            runs.Count(r => r.Completed),
            maxGap,
            medianGap,
            clientErrors,
            runs.Sum(r => r.ProbeErrors),
            runs.Sum(r => r.PgbenchAbortedClients),
            lost,
            pauses.Count > 0 ? Math.Round(Median(pauses), 1) : null,
            pauses.Count > 0 ? Math.Round(pauses.Max(), 1) : null,
            phases,
            bars,
            setup,
            runs)
        {
            MaxGapWholeWindowMs = windowGaps.Count > 0 ? windowGaps.Max() : null,
            MedianGapWholeWindowMs = windowGaps.Count > 0 ? Median(windowGaps) : null,
        };
    }

    public static double Median(IReadOnlyList<double> values)
    {
        var sorted = values.Order().ToList();
        var middle = sorted.Count / 2;
        return sorted.Count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
    }
}

/// <summary>The hand-rolled PgBouncer switchover's gaps (bench/switchover/handrolled-pgbouncer.sh), the reference to beat.</summary>
public sealed record Baseline(double LongestGapMs, double MedianGapMs)
{
    /// <summary>The baseline's gaps at its switchover (PAUSE to RESUME), measured like Teal's.</summary>
    public static Baseline? From(JsonElement handrolled) =>
        handrolled.ValueKind == JsonValueKind.Object
        && handrolled.TryGetProperty("switchoverGapMaxMs", out var max) && max.ValueKind == JsonValueKind.Number
        && handrolled.TryGetProperty("switchoverGapMedianMs", out var median) && median.ValueKind == JsonValueKind.Number
            ? new Baseline(max.GetDouble(), median.GetDouble())
            : null;
}
