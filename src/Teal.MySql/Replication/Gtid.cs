using System.Globalization;

namespace Teal.MySql.Replication;

/// <summary>
/// A MariaDB GTID position: one <c>domain-server-seq</c> per replication domain
/// (<c>0-1-42,1-7-3</c>). MySQL's <c>uuid:1-N</c> sets are a different shape (see <see cref="Engines.ServerFlavor"/>).
/// </summary>
internal sealed record GtidPosition(IReadOnlyDictionary<long, (long Server, long Seq)> Domains)
{
    public static GtidPosition Empty { get; } = new(new Dictionary<long, (long, long)>());

    public static GtidPosition Parse(string? text)
    {
        var domains = new Dictionary<long, (long, long)>();
        foreach (var part in (text ?? string.Empty).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var fields = part.Split('-');
            if (fields.Length == 3
                && long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var domain)
                && long.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out var server)
                && long.TryParse(fields[2], NumberStyles.None, CultureInfo.InvariantCulture, out var seq))
            {
                domains[domain] = (server, seq);
            }
        }

        return new GtidPosition(domains);
    }

    /// <summary>Transactions in this position that <paramref name="applied"/> has not reached (per domain, by sequence number).</summary>
    public long DistanceFrom(GtidPosition applied)
    {
        ArgumentNullException.ThrowIfNull(applied);
        long distance = 0;
        foreach (var (domain, (_, seq)) in Domains)
        {
            var done = applied.Domains.TryGetValue(domain, out var a) ? a.Seq : 0;
            distance += Math.Max(0, seq - done);
        }

        return distance;
    }

    /// <summary>Whether any domain's last transaction was written by <paramref name="serverId"/>.</summary>
    public bool WrittenBy(long serverId) => Domains.Values.Any(d => d.Server == serverId);

    public override string ToString() =>
        string.Join(',', Domains.OrderBy(d => d.Key).Select(d => $"{d.Key}-{d.Value.Server}-{d.Value.Seq}"));
}
