using System.Globalization;
using Teal.Core.Deployments;
using Teal.Core.Events;

namespace Teal.Server.Metrics;

/// <summary>The last verify of each deployment, read from its <c>verified</c> events.</summary>
internal sealed class VerifyTally
{
    private readonly Dictionary<DeploymentId, VerifyOutcome> _last = [];

    /// <summary>The newest event read so far.</summary>
    public long LastSeq { get; private set; }

    public void Add(DeploymentEvent e)
    {
        LastSeq = Math.Max(LastSeq, e.Seq);
        if (e.Kind != EventKinds.Verified || e.DeploymentId is not { } id)
        {
            return;
        }

        _last[id] = new VerifyOutcome(
            e.Time,
            e.Data.GetValueOrDefault("matches") == "true",
            Number(e.Data.GetValueOrDefault("differingTables")),
            Number(e.Data.GetValueOrDefault("rows")));
    }

    public VerifyOutcome? For(DeploymentId id) => _last.GetValueOrDefault(id);

    private static double? Number(string? text) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) ? value : null;
}

/// <summary>What a verify found: equal or not, how many tables differed, rows per side.</summary>
internal sealed record VerifyOutcome(DateTimeOffset At, bool Matches, double? DifferingTables, double? Rows);
