using System.Reflection;
using Microsoft.Extensions.Logging;
using Shouldly;
using Xunit;

namespace Teal.Server.Tests.Hosting;

/// <summary>
/// Log event IDs are how operators filter and alert on Teal's logs, so each means one thing. The
/// ranges per subsystem are listed in ARCHITECTURE.md ("Log event IDs"); this reads every
/// [LoggerMessage] in Teal's assemblies and checks no ID is used twice and each sits in its range.
/// </summary>
public sealed class LogEventIdTests
{
    // Keep in step with the table in ARCHITECTURE.md.
    private static readonly (string Namespace, int From, int To)[] Ranges =
    [
        ("Teal.Core.Hosting", 1000, 1099),
        ("Teal.Core.Deployments", 1100, 1399),
        ("Teal.Core.Switchover", 1500, 1599),
        ("Teal.Server.Hosting", 1900, 1999),
        ("Teal.Proxy", 2000, 2099),
        ("Teal.Core.Instances", 2100, 2199),
        ("Teal.Server.Endpoints", 2200, 2299),
        ("Teal.Core.Endpoints", 2200, 2299),
        ("Teal.Server.Api", 2300, 2399),
        ("Teal.Server.RemoteProxies", 2400, 2449),
        ("Teal.Server.ProxyHost", 2450, 2499),
        ("Teal.Server.Events", 2700, 2799),
        ("Teal.Server.Metrics", 2800, 2899),
        ("Teal.Server.Observability", 2800, 2899),
        ("Teal.Server.State", 2900, 2999),
        ("Teal.Postgres", 4000, 4499),
        ("Teal.MySql", 4500, 4999),
    ];

    [Fact]
    public void EveryLogEventId_IsUsedOnce_AndSitsInItsSubsystemsRange()
    {
        var messages = TealAssemblies()
            .SelectMany(a => a.GetTypes())
            .SelectMany(t => t.GetMethods(BindingFlags.Static | BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly)
                .Select(m => (Method: $"{t.FullName}.{m.Name}", Namespace: t.Namespace ?? "", Attribute: m.GetCustomAttribute<LoggerMessageAttribute>())))
            .Where(m => m.Attribute is not null)
            .ToList();

        messages.Count.ShouldBeGreaterThan(20, "the scan must find Teal's log messages, or it checks nothing");

        var reused = messages.GroupBy(m => m.Attribute!.EventId).Where(g => g.Count() > 1)
            .Select(g => $"{g.Key}: {string.Join(", ", g.Select(m => m.Method))}").ToList();
        reused.ShouldBeEmpty("each log event ID names one message");

        var outOfRange = messages.Where(m => !Ranges.Any(r => m.Namespace.StartsWith(r.Namespace, StringComparison.Ordinal)
                && m.Attribute!.EventId >= r.From && m.Attribute.EventId <= r.To))
            .Select(m => $"{m.Attribute!.EventId} {m.Method}").ToList();
        outOfRange.ShouldBeEmpty("each event ID sits in its subsystem's range (ARCHITECTURE.md, \"Log event IDs\")");
    }

    private static IEnumerable<Assembly> TealAssemblies() =>
        new[] { typeof(TealServer), typeof(Teal.Core.Errors.TealException), typeof(Teal.Proxy.Hosting.ProxyManager),
                typeof(Teal.Postgres.PgBouncer.PgBouncerEndpoint), typeof(Teal.MySql.Engines.MariaDbEngine) }
            .Select(t => t.Assembly).Distinct();
}
