using Npgsql;
using Teal.Cli.Rendering;
using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.Core.Guardrails;
using Teal.Core.Instances;
using Teal.Postgres.Connections;
using Teal.Server.Api;

namespace Teal.Cli.Demo;

/// <summary>
/// <c>teal demo</c>, step by step: a managed PostgreSQL 15 blue with sample data behind an
/// endpoint, an application writing through it the whole time, a deployment to PostgreSQL 17,
/// verify, switchover, and a summary of what the application saw. Every step goes through
/// the same REST API an operator's <c>teal</c> uses.
/// </summary>
internal sealed class DemoRun(CliSession session, DemoOptions options)
{
    private const string Blue = "app";
    private const string Deployment = "upgrade";
    private const string AppUser = "app_user";
    private const string AppPassword = "app-demo-password";
    private const int Orders = 100_000;

    private TextWriter Out => session.Output;

    public async Task<int> RunAsync(CancellationToken ct)
    {
        await StepAsync($"starting teal serve on {options.Server} (data in {options.Directory}, log in {options.ServeLog})");
        await DemoServer.StopAsync(options);
        if (Directory.Exists(options.Directory))
        {
            Directory.Delete(options.Directory, recursive: true);
        }

        await DemoServer.StartAsync(options, ct);
        var token = (await File.ReadAllTextAsync(Path.Combine(options.Directory, "token"), ct)).Trim();
        using var api = new ApiClient(options.Server, token);
        await Out.WriteLineAsync($"    dashboard: {options.Server}#/d/{Deployment} — open it to watch the demo live");

        await StepAsync($"creating blue: a managed PostgreSQL 15 named '{Blue}' behind the endpoint 127.0.0.1:{options.EndpointPort}");
        var instance = ApiClient.Parse<InstanceView>(await api.SendAsync(HttpMethod.Post, "/api/instances", new AddInstanceRequest(Blue) { Version = "15", Endpoint = $"127.0.0.1:{options.EndpointPort}" }, ct));
        await Out.WriteLineAsync($"    PostgreSQL {instance.Version} on {instance.Host}:{instance.Port}");

        await StepAsync($"loading sample data: {Orders:N0} orders and the application's role {AppUser}");
        var blueUrl = ApiClient.Parse<InstanceUrl>(await api.SendAsync(HttpMethod.Get, $"/api/instances/{Blue}/url", null, ct)).Url;
        await LoadSampleDataAsync(ConnectionStrings.Parse(blueUrl), ct);

        await StepAsync($"starting the application: 4 clients writing through the endpoint 127.0.0.1:{options.EndpointPort}");
        var endpoint = new NpgsqlConnectionStringBuilder { Host = "127.0.0.1", Port = options.EndpointPort, Username = AppUser, Password = AppPassword, Database = instance.Database }.ConnectionString;
        await using var writer = new DemoWriter(endpoint, clients: 4);

        await StepAsync($"creating the deployment '{Deployment}': green is a managed PostgreSQL 17, replicating from blue");
        var created = ApiClient.Parse<Deployment>(await api.SendAsync(HttpMethod.Post, "/api/deployments", new CreateDeploymentSpec(Deployment, Blue) { TargetEngineVersion = "17" }, ct));
        var deployment = await WaitForAvailableAsync(api, created, ct);

        await StepAsync("verifying blue and green row by row while the application writes");
        var report = ApiClient.Parse<VerifyReport>(await api.SendAsync(HttpMethod.Post, $"/api/deployments/{Deployment}/verify", null, ct));
        await Out.WriteLineAsync($"    {report.Tables.Count} tables, {report.RowsPerSide:N0} rows per side: {(report.Matches ? "all equal" : "DIFFERENT")}");

        await StepAsync("checking the switchover's guardrails");
        var checks = ApiClient.Parse<CheckReport>(await api.SendAsync(HttpMethod.Post, $"/api/deployments/{Deployment}/check", new SwitchoverRequest(60, null, null), ct));
        foreach (var check in checks.Results)
        {
            await Out.WriteLineAsync($"    {(check.Passed ? "ok  " : "FAIL")} {check.Name}: {check.Message}");
        }

        if (session.IsTerminal && !Console.IsInputRedirected)
        {
            // Time to open the dashboard; piped or in CI the demo goes straight on.
            await Out.WriteAsync($"{Environment.NewLine}Press Enter to switch over (watch it at {options.Server}#/d/{Deployment})… ");
            await session.Input.ReadLineAsync(ct);
        }

        await StepAsync("switching over while the application writes");
        deployment = ApiClient.Parse<Deployment>(await api.SendAsync(HttpMethod.Post, $"/api/deployments/{Deployment}/switchover", new SwitchoverRequest(60, null, null), ct));
        deployment = await FollowSwitchoverAsync(api, deployment, ct);

        // A few more seconds of writes on green, then the application stops and is checked.
        await Task.Delay(TimeSpan.FromSeconds(3), ct);
        await writer.StopAsync();
        var present = await ReadWrittenAsync(endpoint, ct);
        var lost = writer.Missing(present);
        var green = ApiClient.Parse<InstanceView[]>(await api.SendAsync(HttpMethod.Get, "/api/instances", null, ct)).First(i => i.Name == deployment.Green);

        await WriteSummaryAsync(deployment, report, writer, lost.Count, green);
        return deployment.Status == DeploymentStatus.SwitchoverCompleted && lost.Count == 0 ? ExitCodes.Ok : ExitCodes.Refused;
    }

    private static async Task LoadSampleDataAsync(ConnectionInfo blue, CancellationToken ct)
    {
        var builder = new NpgsqlConnectionStringBuilder { Host = blue.Host, Port = blue.Port, Username = blue.User, Password = blue.Password, Database = blue.Database, Pooling = false, CommandTimeout = 300 };
        await using var connection = new NpgsqlConnection(builder.ConnectionString);
        await connection.OpenAsync(ct);
        string[] statements =
        [
            $"CREATE ROLE {AppUser} LOGIN PASSWORD '{AppPassword}'",
            "CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, email text NOT NULL UNIQUE)",
            "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers, amount numeric(10,2) NOT NULL, status text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
            "INSERT INTO customers (name, email) SELECT 'customer ' || g, 'customer' || g || '@example.com' FROM generate_series(1, 5000) g",
            $"INSERT INTO orders (customer_id, amount, status, created_at) SELECT 1 + g % 5000, round((random() * 500)::numeric, 2), (ARRAY['new','paid','shipped'])[1 + g % 3], now() - g * interval '1 minute' FROM generate_series(1, {Orders}) g",
            DemoWriter.CreateTableSql,
            $"GRANT ALL ON ALL TABLES IN SCHEMA public TO {AppUser}",
            $"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {AppUser}",
            "ANALYZE",
        ];
        foreach (var sql in statements)
        {
            await using var command = new NpgsqlCommand(sql, connection);
            await command.ExecuteNonQueryAsync(ct);
        }
    }

    private async Task<Deployment> WaitForAvailableAsync(ApiClient api, Deployment deployment, CancellationToken ct)
    {
        var printed = new HashSet<string>(StringComparer.Ordinal);
        deployment = await LiveView.RunAsync(session, json: false, async update =>
        {
            while (true)
            {
                deployment = ApiClient.Parse<Deployment>(await api.SendAsync(HttpMethod.Get, $"/api/deployments/{Deployment}", null, ct));
                update?.Invoke(ProgressViews.Tasks(deployment));
                foreach (var task in update is null ? deployment.Tasks.Where(t => t.Status is DeploymentTaskStatus.Completed or DeploymentTaskStatus.Failed) : [])
                {
                    if (printed.Add(task.Kind.ToString()))
                    {
                        await Out.WriteLineAsync($"    {TaskNames.Of(task.Kind),-16} {Format.Name(task.Status),-10} {task.Message}");
                    }
                }

                if (deployment.Status != DeploymentStatus.Provisioning)
                {
                    return deployment;
                }

                await Task.Delay(500, ct);
            }
        });
        if (deployment.Status != DeploymentStatus.Available)
        {
            throw new CliException($"the deployment is {Format.Name(deployment.Status)}: {deployment.StatusReason}", $"see {options.ServeLog}");
        }

        await Out.WriteLineAsync($"    AVAILABLE: green replicates blue, lag {Format.Bytes(deployment.Replication.LagBytes)} / {Format.Seconds(deployment.Replication.LagSeconds)}");
        return deployment;
    }

    /// <summary>The phases' results line up after the longest step name.</summary>
    private static readonly int StepColumn = Core.Switchover.SwitchoverPlan.Forward().Max(s => s.Name.Length);

    private async Task<Deployment> FollowSwitchoverAsync(ApiClient api, Deployment deployment, CancellationToken ct)
    {
        var printed = 0;
        return await LiveView.RunAsync(session, json: false, async update =>
        {
            while (true)
            {
                update?.Invoke(ProgressViews.Switchover(Deployment, deployment.Switchover));
                var phases = deployment.Switchover?.Phases ?? [];
                for (; update is null && printed < phases.Count; printed++)
                {
                    await Out.WriteLineAsync($"    {phases[printed].Step.PadRight(StepColumn)} {phases[printed].Result,-7} {phases[printed].Milliseconds,7:0} ms");
                }

                if (deployment.Status != DeploymentStatus.SwitchoverInProgress)
                {
                    return deployment;
                }

                await Task.Delay(100, ct);
                deployment = ApiClient.Parse<Deployment>(await api.SendAsync(HttpMethod.Get, $"/api/deployments/{Deployment}", null, ct));
            }
        });
    }

    private static async Task<HashSet<long>> ReadWrittenAsync(string endpoint, CancellationToken ct)
    {
        await using var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(endpoint) { Pooling = false }.ConnectionString);
        await connection.OpenAsync(ct);
        await using var command = new NpgsqlCommand($"SELECT n FROM {DemoWriter.Table}", connection);
        await using var reader = await command.ExecuteReaderAsync(ct);
        var present = new HashSet<long>();
        while (await reader.ReadAsync(ct))
        {
            present.Add(reader.GetInt64(0));
        }

        return present;
    }

    private async Task WriteSummaryAsync(Deployment deployment, VerifyReport report, DemoWriter writer, int lost, InstanceView green)
    {
        var s = deployment.Switchover;
        await StepAsync("summary");
        var total = s?.FinishedAt is { } finished ? $" in {(finished - s.StartedAt).TotalMilliseconds:0} ms" : string.Empty;
        Line("switchover", $"{Format.Name(s?.Outcome ?? Core.Switchover.SwitchoverOutcome.InProgress)}{total}{(s?.Reason is { } reason ? $": {reason}" : string.Empty)}");
        Line("phases", string.Join(", ", (s?.Phases ?? []).Select(p => $"{p.Step} {p.Milliseconds:0} ms")));
        Line("write pause", s?.WritePauseMilliseconds is { } pause ? $"{pause:0} ms (new connections were held at the endpoint, then sent to green)" : "-");
        Line("rows verified", $"{report.RowsPerSide:N0} per side in {report.Tables.Count} tables, {(report.Matches ? "all equal" : "with differences")}");
        Line("writes", $"{writer.Acknowledged.Count:N0} acknowledged through the endpoint, {lost} lost (every acknowledged write is on green)");
        Line("client errors", writer.Errors == 0
            ? "0"
            : $"{writer.Errors} (statements on connections the switchover closed between transactions; none had been acknowledged, each was retried on a new connection)");
        Line("now", $"'{deployment.Green}' is PostgreSQL {green.Version} and takes the writes; '{deployment.Blue}' is the old blue, fenced (no login but Teal's)");
        Line("way back", deployment.Reversed
            ? $"'{deployment.Blue}' applies green's writes: `teal switchback {Deployment}` goes back losing nothing, `teal finish {Deployment}` ends it"
            : $"none kept: `teal instance unfence {deployment.Blue}` lets clients back on the old blue");
        Line("dashboard", $"{options.Server}#/d/{Deployment}   (actions need the token: cat {Path.Combine(options.Directory, "token")})");
        Line("metrics", $"{options.Server}metrics");
        await Out.WriteLineAsync();
        await Out.WriteLineAsync($"teal serve keeps running (log: {options.ServeLog}); stop it and the demo's servers with `teal demo --stop`.");
        // From a clone the command is scripts/teal, which is not on PATH yet: say how to get it there.
        var path = Environment.GetEnvironmentVariable("TEAL_SCRIPTS") is { Length: > 0 } scripts ? $"PATH=\"{scripts}:$PATH\" " : string.Empty;
        await Out.WriteLineAsync($"Use the CLI against it: export {path}TEAL_SERVER={options.Server} TEAL_TOKEN=$(cat {Path.Combine(options.Directory, "token")}); teal show {Deployment}");
    }

    private void Line(string label, string text) => Out.WriteLine($"  {label,-14} {text}");

    private Task StepAsync(string text) => Out.WriteLineAsync(Environment.NewLine + "==> " + text);
}
