using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Net.Http.Json;
using System.Text.RegularExpressions;
using Npgsql;
using Teal.Server.Tests.Support;

namespace Teal.Server.Tests.Observability;

/// <summary><c>/metrics</c> follows a real deployment through replication, verify and switchover.</summary>
public sealed partial class MetricsTests : IAsyncLifetime
{
    private LiveDeployment _live = null!; // Set in InitializeAsync.

    public async Task InitializeAsync() => _live = await LiveDeployment.StartAsync();

    public async Task DisposeAsync() => await _live.DisposeAsync();

    [Fact]
    public async Task Metrics_FollowADeploymentThroughReplicationVerifyAndSwitchover()
    {
        // Replicating: status, state, lag, retained WAL, tasks, all labelled by the deployment's name.
        await WaitForReplicationFiguresAsync();
        var text = await _live.ScrapeAsync();
        Value(text, "teal_deployment_status", "deployment=\"orders\",status=\"AVAILABLE\"").ShouldBe(1);
        Value(text, "teal_deployment_status", "deployment=\"orders\",status=\"SWITCHOVER_COMPLETED\"").ShouldBe(0);
        Value(text, "teal_replication_state", "deployment=\"orders\",state=\"REPLICATING\"").ShouldBe(1);
        Value(text, "teal_replication_lag_seconds", "deployment=\"orders\"").ShouldNotBeNull().ShouldBeLessThan(60);
        Value(text, "teal_replication_lag_bytes", "deployment=\"orders\"").ShouldNotBeNull().ShouldBeGreaterThanOrEqualTo(0);
        Value(text, "teal_replication_retained_wal_bytes", "deployment=\"orders\"").ShouldNotBeNull();
        Value(text, "teal_deployment_task_progress_ratio", "deployment=\"orders\",task=\"COPY_DATA\"").ShouldBe(1);
        text.ShouldContain("process_cpu_seconds_total");

        // Endpoint figures: a client through the endpoint counts as an active connection.
        await using (var connection = new NpgsqlConnection(_live.EndpointConnectionString))
        {
            await connection.OpenAsync();
            await using var insert = new NpgsqlCommand("INSERT INTO orders (note) VALUES ('through the endpoint')", connection);
            await insert.ExecuteNonQueryAsync();
            text = await _live.ScrapeAsync();
            Value(text, "teal_endpoint_connections_active", "endpoint=\"app\",instance=\"app\"").ShouldBe(1);
            Value(text, "teal_endpoint_received_bytes_total", "endpoint=\"app\",instance=\"app\"").ShouldNotBeNull().ShouldBeGreaterThan(0);
            Value(text, "teal_endpoint_sessions_moved_total", "endpoint=\"app\",instance=\"app\"").ShouldBe(0);
            Value(text, "teal_endpoint_sessions_closed_total", "endpoint=\"app\",instance=\"app\"").ShouldBe(0);
        }

        // Verify: the result, its rows.
        using var client = _live.Teal.Client();
        (await client.PostAsync("/api/deployments/orders/verify", null)).EnsureSuccessStatusCode();
        text = await _live.ScrapeAsync();
        Value(text, "teal_verify_matches", "deployment=\"orders\"").ShouldBe(1);
        Value(text, "teal_verify_differing_tables", "deployment=\"orders\"").ShouldBe(0);
        Value(text, "teal_verify_rows", "deployment=\"orders\"").ShouldNotBeNull().ShouldBeGreaterThanOrEqualTo(1001);

        // Switchover: outcome, write pause, one duration per step. A webhook whose receiver
        // accepts the connection and never answers must not hold it up.
        using var silent = new TcpListener(IPAddress.Loopback, 0);
        silent.Start();
        (await client.PostAsJsonAsync("/api/webhooks", new { url = $"http://127.0.0.1:{((IPEndPoint)silent.LocalEndpoint).Port}/hook" })).EnsureSuccessStatusCode();
        (await client.PostAsJsonAsync("/api/deployments/orders/switchover", new { switchoverTimeout = 60 })).EnsureSuccessStatusCode();
        await _live.WaitForStatusAsync("SWITCHOVER_COMPLETED", TimeSpan.FromMinutes(2));
        text = await _live.ScrapeAsync();
        Value(text, "teal_deployment_status", "deployment=\"orders\",status=\"SWITCHOVER_COMPLETED\"").ShouldBe(1);
        Value(text, "teal_switchover_outcome", "deployment=\"orders\",outcome=\"COMPLETED\"").ShouldBe(1);
        Value(text, "teal_switchover_outcome", "deployment=\"orders\",outcome=\"ROLLED_BACK\"").ShouldBe(0);
        Value(text, "teal_switchover_write_pause_seconds", "deployment=\"orders\"").ShouldNotBeNull().ShouldBeGreaterThan(0);
        Value(text, "teal_switchover_phase_duration_seconds", "deployment=\"orders\",step=\"flip\",result=\"done\"").ShouldNotBeNull();

        // The event is written just after the status it reports (its own write), so a scrape in
        // between may not have it yet.
        await WaitForAsync("teal_events_total", "kind=\"switchover-completed\"", "the switchover-completed event was never counted");
        Value(await _live.ScrapeAsync(), "teal_events_total", "kind=\"switchover-completed\"").ShouldBe(1);
    }

    [Fact]
    public async Task Metrics_OfADeletedDeployment_Disappear()
    {
        (await _live.ScrapeAsync()).ShouldContain("deployment=\"orders\"");
        using var client = _live.Teal.Client();

        (await client.DeleteAsync("/api/deployments/orders?deleteTarget=true")).EnsureSuccessStatusCode();

        (await _live.ScrapeAsync()).ShouldNotContain("deployment=\"orders\"");
    }

    private Task WaitForReplicationFiguresAsync() =>
        WaitForAsync("teal_replication_lag_seconds", "deployment=\"orders\"", "the monitor never reported lag");

    private async Task WaitForAsync(string metric, string labels, string failure)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (Value(await _live.ScrapeAsync(), metric, labels) is null)
        {
            DateTime.UtcNow.ShouldBeLessThan(deadline, failure);
            await Task.Delay(250);
        }
    }

    /// <summary>The sample's value, or null when the series is absent.</summary>
    private static double? Value(string text, string metric, string labels)
    {
        var match = Regex.Match(text, "^" + Regex.Escape(metric + "{" + labels + "}") + " (\\S+)$", RegexOptions.Multiline);
        return match.Success ? double.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture) : null;
    }
}
