using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;

namespace Teal.Proxy.Tests.Endpoints;

public sealed class PlaintextServersTests
{
    [Fact]
    public void Remember_KnownForAMinute_ThenAskedAgain()
    {
        var time = new SteppedTime();
        var servers = new PlaintextServers(time);
        var green = new EndpointTarget("green", "127.0.0.1", 5433, "postgres");

        servers.Known(green).ShouldBeFalse();
        servers.Remember(green);

        servers.Known(green).ShouldBeTrue();
        servers.Known(green with { Port = 5434 }).ShouldBeFalse();
        time.Advance(TimeSpan.FromSeconds(59));
        servers.Known(green).ShouldBeTrue();
        time.Advance(TimeSpan.FromSeconds(2));
        servers.Known(green).ShouldBeFalse();
    }

    private sealed class SteppedTime : TimeProvider
    {
        private long _ticks;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => _ticks;

        public void Advance(TimeSpan by) => _ticks += by.Ticks;
    }
}
