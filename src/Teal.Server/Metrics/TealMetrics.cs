using Prometheus;
using Teal.Core.Deployments;
using Teal.Core.State;
using Teal.Core.Switchover;
using Teal.Core.Endpoints;
using System.Text.Json;

namespace Teal.Server.Metrics;

/// <summary>
/// Teal's Prometheus metrics. Figures are read from the same records the API serves, at scrape
/// time (a before-collect callback), so a scrape shows what <c>teal show</c> would: nothing is
/// updated on the switchover's path. Series of deleted deployments and endpoints disappear.
/// Each server has its own registry, so several servers in one process (tests) do not mix.
/// </summary>
public sealed class TealMetrics : IDisposable
{
    private readonly IStateStore _state;
    private readonly EndpointService _endpoints;
    private readonly VerifyTally _verify = new();
    private readonly SemaphoreSlim _collecting = new(1, 1);

    private readonly Gauge _deploymentStatus;
    private readonly Gauge _replicationState;
    private readonly Gauge _lagBytes;
    private readonly Gauge _lagSeconds;
    private readonly Gauge _retainedBytes;
    private readonly Gauge _workerRunning;
    private readonly Gauge _pendingDdl;
    private readonly Gauge _taskProgress;
    private readonly Gauge _verifyMatches;
    private readonly Gauge _verifyDiffering;
    private readonly Gauge _verifyRows;
    private readonly Gauge _verifyTime;
    private readonly Gauge _switchoverOutcome;
    private readonly Gauge _phaseSeconds;
    private readonly Gauge _writePause;
    private readonly Gauge _switchoverStarted;
    private readonly Gauge _endpointActive;
    private readonly Gauge _endpointHeld;
    private readonly Gauge _endpointConnections;
    private readonly Gauge _endpointReceived;
    private readonly Gauge _endpointSent;
    private readonly Gauge _endpointErrors;
    private readonly Gauge _endpointSessionsMoved;
    private readonly Gauge _endpointSessionsClosed;
    private readonly Counter _events;

    public TealMetrics(IStateStore state, EndpointService endpoints)
    {
        _state = state;
        _endpoints = endpoints;
        Registry = Prometheus.Metrics.NewCustomRegistry();
        // process_cpu_seconds_total, process_resident_memory_bytes, dotnet_collection_count_total, …
        DotNetStats.Register(Registry);
        var factory = Prometheus.Metrics.WithCustomRegistry(Registry);
        string[] d = ["deployment"];
        string[] e = ["endpoint", "instance"];

        factory.CreateGauge("teal_info", "Teal's version (always 1).", "version").WithLabels(TealServer.Version).Set(1);
        _deploymentStatus = factory.CreateGauge("teal_deployment_status", "1 for the deployment's current status, 0 for the others.", "deployment", "status");
        _replicationState = factory.CreateGauge("teal_replication_state", "1 for the replication's current state, 0 for the others.", "deployment", "state");
        _lagBytes = factory.CreateGauge("teal_replication_lag_bytes", "WAL blue has written that green has not confirmed.", d);
        _lagSeconds = factory.CreateGauge("teal_replication_lag_seconds", "Age on green of the newest heartbeat Teal wrote on blue.", d);
        _retainedBytes = factory.CreateGauge("teal_replication_retained_wal_bytes", "WAL blue keeps for the deployment's replication slot.", d);
        _workerRunning = factory.CreateGauge("teal_replication_worker_running", "1 when green's apply worker runs.", d);
        _pendingDdl = factory.CreateGauge("teal_replication_pending_ddl", "DDL statements seen on blue and not yet acknowledged.", d);
        _taskProgress = factory.CreateGauge("teal_deployment_task_progress_ratio", "Progress of a create task, 0 to 1 (1 when completed).", "deployment", "task");
        _verifyMatches = factory.CreateGauge("teal_verify_matches", "1 when the last verify found blue and green equal.", d);
        _verifyDiffering = factory.CreateGauge("teal_verify_differing_tables", "Tables that differed at the last verify.", d);
        _verifyRows = factory.CreateGauge("teal_verify_rows", "Rows per side compared at the last verify.", d);
        _verifyTime = factory.CreateGauge("teal_verify_timestamp_seconds", "When the last verify finished (Unix time).", d);
        _switchoverOutcome = factory.CreateGauge("teal_switchover_outcome", "1 for the outcome of the deployment's last switchover (IN_PROGRESS, COMPLETED, ROLLED_BACK).", "deployment", "outcome");
        _phaseSeconds = factory.CreateGauge("teal_switchover_phase_duration_seconds", "How long each step of the last switchover took.", "deployment", "step", "result");
        _writePause = factory.CreateGauge("teal_switchover_write_pause_seconds", "Write pause clients saw at the last switchover (endpoints paused to resumed).", d);
        _switchoverStarted = factory.CreateGauge("teal_switchover_started_timestamp_seconds", "When the last switchover started (Unix time).", d);
        _endpointActive = factory.CreateGauge("teal_endpoint_connections_active", "Client connections open through the endpoint.", e);
        _endpointHeld = factory.CreateGauge("teal_endpoint_connections_held", "Client connections held while the endpoint is paused.", e);
        // Cumulative figures are gauges, not counters: an endpoint restarted with Teal starts from
        // zero, which Prometheus' rate() treats as a counter reset either way.
        _endpointConnections = factory.CreateGauge("teal_endpoint_connections_total", "Client connections accepted since the endpoint started.", e);
        _endpointReceived = factory.CreateGauge("teal_endpoint_received_bytes_total", "Bytes received from clients since the endpoint started.", e);
        _endpointSent = factory.CreateGauge("teal_endpoint_sent_bytes_total", "Bytes sent to clients since the endpoint started.", e);
        _endpointErrors = factory.CreateGauge("teal_endpoint_errors_total", "Connections that ended in an error since the endpoint started.", e);
        _endpointSessionsMoved = factory.CreateGauge("teal_endpoint_sessions_moved_total", "Sessions a switchover moved to the new target with their state.", e);
        _endpointSessionsClosed = factory.CreateGauge("teal_endpoint_sessions_closed_total", "Sessions a switchover closed (57P01) because they could not move, or cut at the drain budget.", e);
        _events = factory.CreateCounter("teal_events_total", "Events recorded since Teal started, by kind.", "kind");

        Registry.AddBeforeCollectCallback(CollectAsync);
    }

    public CollectorRegistry Registry { get; }

    public void Dispose() => _collecting.Dispose();

    /// <summary>The exposition text, as <c>/metrics</c> serves it.</summary>
    public async Task<string> ScrapeAsync(CancellationToken cancellationToken)
    {
        using var stream = new MemoryStream();
        await Registry.CollectAndExportAsTextAsync(stream, cancellationToken);
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }

    private async Task CollectAsync(CancellationToken cancellationToken)
    {
        // Two scrapes at once would interleave their removals of stale series.
        await _collecting.WaitAsync(cancellationToken);
        try
        {
            await CollectEventsAsync(cancellationToken);
            CollectDeployments(await _state.ListDeploymentsAsync(cancellationToken));
            CollectEndpoints([.. (await _endpoints.ListAsync(cancellationToken)).Select(Api.EndpointView.From)]);
        }
        finally
        {
            _collecting.Release();
        }
    }

    private async Task CollectEventsAsync(CancellationToken cancellationToken)
    {
        const int Page = 1000;
        var first = _verify.LastSeq == 0;
        while (true)
        {
            var events = await _state.ListEventsAsync(null, _verify.LastSeq, Page, cancellationToken);
            foreach (var e in events)
            {
                _verify.Add(e);
                if (!first)
                {
                    // Counted from the start of this process: earlier events are history, not rate.
                    _events.WithLabels(e.Kind).Inc();
                }
            }

            if (events.Count < Page)
            {
                return;
            }
        }
    }

    private void CollectDeployments(IReadOnlyList<Deployment> deployments)
    {
        var live = deployments.Select(x => x.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var gauge in new[] { _deploymentStatus, _replicationState, _lagBytes, _lagSeconds, _retainedBytes, _workerRunning, _pendingDdl, _taskProgress, _verifyMatches, _verifyDiffering, _verifyRows, _verifyTime, _switchoverOutcome, _phaseSeconds, _writePause, _switchoverStarted })
        {
            RemoveStale(gauge, labels => live.Contains(labels[0]));
        }

        foreach (var deployment in deployments)
        {
            var name = deployment.Name;
            foreach (var status in Enum.GetValues<DeploymentStatus>())
            {
                _deploymentStatus.WithLabels(name, Label(status)).Set(status == deployment.Status ? 1 : 0);
            }

            var replication = deployment.Replication;
            foreach (var state in Enum.GetValues<ReplicationState>())
            {
                _replicationState.WithLabels(name, Label(state)).Set(state == replication.State ? 1 : 0);
            }

            SetOrRemove(_lagBytes, replication.LagBytes, name);
            SetOrRemove(_lagSeconds, replication.LagSeconds, name);
            SetOrRemove(_retainedBytes, replication.RetainedBytes, name);
            SetOrRemove(_workerRunning, replication.WorkerRunning is { } running ? (running ? 1 : 0) : null, name);
            _pendingDdl.WithLabels(name).Set(replication.PendingDdl.Count);
            foreach (var task in deployment.Tasks)
            {
                var ratio = task.Status == DeploymentTaskStatus.Completed ? 1 : (task.Percent ?? 0) / 100;
                _taskProgress.WithLabels(name, Label(task.Kind)).Set(ratio);
            }

            if (_verify.For(deployment.Id) is { } verified)
            {
                _verifyMatches.WithLabels(name).Set(verified.Matches ? 1 : 0);
                SetOrRemove(_verifyDiffering, verified.DifferingTables, name);
                SetOrRemove(_verifyRows, verified.Rows, name);
                _verifyTime.WithLabels(name).Set(verified.At.ToUnixTimeMilliseconds() / 1000.0);
            }

            CollectSwitchover(name, deployment.Switchover);
        }
    }

    private void CollectSwitchover(string name, SwitchoverState? switchover)
    {
        if (switchover is null)
        {
            return;
        }

        foreach (var outcome in Enum.GetValues<SwitchoverOutcome>())
        {
            _switchoverOutcome.WithLabels(name, Label(outcome)).Set(outcome == switchover.Outcome ? 1 : 0);
        }

        _switchoverStarted.WithLabels(name).Set(switchover.StartedAt.ToUnixTimeMilliseconds() / 1000.0);
        SetOrRemove(_writePause, switchover.WritePauseMilliseconds / 1000, name);
        // Only the last switchover's steps: a step of an earlier one must not linger.
        var steps = switchover.Phases.Select(p => (p.Step, p.Result)).ToHashSet();
        RemoveStale(_phaseSeconds, labels => labels[0] != name || steps.Contains((labels[1], labels[2])));
        foreach (var phase in switchover.Phases)
        {
            _phaseSeconds.WithLabels(name, phase.Step, phase.Result).Set(phase.Milliseconds / 1000);
        }
    }

    private void CollectEndpoints(IReadOnlyList<Api.EndpointView> endpoints)
    {
        var live = endpoints.Where(x => x.Stats is not null).Select(x => (x.Name, x.Instance)).ToHashSet();
        foreach (var gauge in new[] { _endpointActive, _endpointHeld, _endpointConnections, _endpointReceived, _endpointSent, _endpointErrors, _endpointSessionsMoved, _endpointSessionsClosed })
        {
            RemoveStale(gauge, labels => live.Contains((labels[0], labels[1])));
        }

        foreach (var endpoint in endpoints)
        {
            if (endpoint.Stats is not { } stats)
            {
                continue;
            }

            string[] labels = [endpoint.Name, endpoint.Instance];
            _endpointActive.WithLabels(labels).Set(stats.Active);
            _endpointHeld.WithLabels(labels).Set(stats.Held);
            _endpointConnections.WithLabels(labels).Set(stats.Total);
            _endpointReceived.WithLabels(labels).Set(stats.BytesFromClients);
            _endpointSent.WithLabels(labels).Set(stats.BytesToClients);
            _endpointErrors.WithLabels(labels).Set(stats.Errors);
            _endpointSessionsMoved.WithLabels(labels).Set(stats.SessionsMoved);
            _endpointSessionsClosed.WithLabels(labels).Set(stats.SessionsClosed);
        }
    }

    /// <summary>An enum value as the API spells it (SWITCHOVER_IN_PROGRESS).</summary>
    private static string Label<T>(T value)
        where T : struct, Enum => JsonNamingPolicy.SnakeCaseUpper.ConvertName(value.ToString());

    private static void SetOrRemove(Gauge gauge, double? value, string deployment)
    {
        if (value is { } v)
        {
            gauge.WithLabels(deployment).Set(v);
        }
        else
        {
            gauge.RemoveLabelled(deployment);
        }
    }

    private static void RemoveStale(Gauge gauge, Func<string[], bool> keep)
    {
        foreach (var labels in gauge.GetAllLabelValues().ToList())
        {
            if (!keep(labels))
            {
                gauge.RemoveLabelled(labels);
            }
        }
    }
}
