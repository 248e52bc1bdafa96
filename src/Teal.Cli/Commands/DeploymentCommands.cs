using System.CommandLine;
using System.Globalization;
using Teal.Cli.Rendering;
using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.Server.Api;

namespace Teal.Cli.Commands;

/// <summary>The deployment verbs: <c>create</c>, <c>list</c>, <c>show</c>, <c>verify</c>, <c>ack-ddl</c>, <c>apply-ddl</c>, <c>add-tables</c>, <c>delete</c>.</summary>
internal static class DeploymentCommands
{
    public static IEnumerable<Command> Create(CliSession session) =>
        [CreateVerb(session), List(session), Show(session), Verify(session), AckDdl(session), ApplyDdl(session), AddTables(session), Delete(session)];

    private static Command CreateVerb(CliSession session)
    {
        var name = new Argument<string>("NAME") { Description = "Deployment name" };
        var source = new Option<string>("--source") { Description = "Blue: the registered writer instance", Required = true };
        var version = new Option<string?>("--target-engine-version") { Description = "Managed green: engine version (default: blue's major version)" };
        var parameters = Verb.ServerSettings("--target-parameter", "Managed green: server setting KEY=VALUE (repeatable)");
        var connection = new Option<string?>("--target-connection") { Description = $"External green: connection string of an empty server you provisioned; {PasswordOptions.ArgvWarning("target-")}" };
        var password = new PasswordOptions("target-", "the external green's");
        var tags = Verb.KeyValues("--tag", "Tag KEY=VALUE (repeatable)");
        var wait = new Option<bool>("--wait") { Description = "Show task progress until the deployment is AVAILABLE or fails" };
        var readers = new Option<int>("--target-readers") { Description = $"Managed green: N readers (physical replicas of green, 0–{GreenTopology.MaxReaders}); reader endpoints move to them at switchover" };
        var noReverse = new Option<bool>("--no-reverse-replication") { Description = "Do not replicate green's writes back to the old blue after the switchover (no lossless `teal switchback`)" };
        var cdcSlots = new Option<string[]>("--cdc-slot") { Description = "Logical slot on blue that a CDC consumer reads; Teal creates it on green at each cutover (repeatable)", DefaultValueFactory = _ => [] };
        var cdcWait = new Option<bool>("--cdc-wait") { Description = "Every switchover and switchback waits (within its timeout) until each --cdc-slot consumer confirmed the final position" };
        var parallelism = new Option<int?>("--copy-parallelism") { Description = "Sessions of the initial copy: large tables are copied in key ranges in parallel from one snapshot (default: one per core, at most 8); 1 keeps PostgreSQL's own subscription copy" };
        var command = new Command("create", "Create a blue/green deployment: provision green, copy, replicate") { name, source, version, parameters, readers, connection, tags, wait, noReverse, cdcSlots, cdcWait, parallelism };
        password.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            var spec = new CreateDeploymentSpec(parse.GetValue(name)!, parse.GetValue(source)!)
            {
                TargetEngineVersion = parse.GetValue(version),
                TargetParameters = Verb.ToDictionary(parse.GetValue(parameters)),
                TargetReaders = parse.GetValue(readers),
                TargetConnection = parse.GetValue(connection),
                TargetPassword = await password.ReadAsync(parse, session, ct),
                Tags = Verb.ToDictionary(parse.GetValue(tags)),
                ReverseReplication = !parse.GetValue(noReverse),
                CdcSlots = parse.GetValue(cdcSlots) ?? [],
                CdcWait = parse.GetValue(cdcWait),
                CopyParallelism = parse.GetValue(parallelism),
            };
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Post, "/api/deployments", spec, ct);
            var deployment = ApiClient.Parse<Deployment>(body);
            if (session.Json(parse) && !parse.GetValue(wait))
            {
                session.WriteJson(body);
                return ExitCodes.Ok;
            }

            if (!session.Json(parse))
            {
                await session.Output.WriteLineAsync($"deployment {deployment.Name} ({deployment.Id}) created: blue {deployment.Blue} → green {deployment.Green}");
                foreach (var warning in deployment.Warnings)
                {
                    await session.Output.WriteLineAsync($"warning: {warning.Message}{(warning.Hint is null ? string.Empty : $"\n  fix: {warning.Hint}")}");
                }
            }

            return parse.GetValue(wait) ? await WaitAsync(session, parse, api, deployment, ct) : ExitCodes.Ok;
        });
        return command;
    }

    /// <summary>Polls once a second, printing each task change, until AVAILABLE or a failure.</summary>
    private static async Task<int> WaitAsync(CliSession session, ParseResult parse, ApiClient api, Deployment deployment, CancellationToken ct)
    {
        var seen = new Dictionary<DeploymentTaskKind, string>();
        try
        {
            // On a terminal the tasks are redrawn in place with progress bars; elsewhere each change is a line.
            deployment = await LiveView.RunAsync(session, session.Json(parse), async update =>
            {
                while (true)
                {
                    var body = await api.SendAsync(HttpMethod.Get, $"/api/deployments/{deployment.Id}", null, ct);
                    deployment = ApiClient.Parse<Deployment>(body);
                    update?.Invoke(ProgressViews.Tasks(deployment));
                    foreach (var task in update is null ? deployment.Tasks : [])
                    {
                        var line = $"{TaskNames.Of(task.Kind),-16} {Format.Name(task.Status),-12} {Percent(task.Percent),5}  {task.Message}";
                        if (!session.Json(parse) && (!seen.TryGetValue(task.Kind, out var previous) || previous != line))
                        {
                            seen[task.Kind] = line;
                            await session.Output.WriteLineAsync(line);
                        }
                    }

                    if (deployment.Status is not DeploymentStatus.Provisioning)
                    {
                        return deployment;
                    }

                    await Task.Delay(TimeSpan.FromSeconds(1), ct);
                }
            });
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            await session.Error.WriteLineAsync($"stopped waiting; Teal carries on (teal show {deployment.Name})");
            return ExitCodes.Ok;
        }

        if (session.Json(parse))
        {
            session.WriteJson(deployment);
        }

        if (deployment.Status == DeploymentStatus.Available)
        {
            if (!session.Json(parse))
            {
                await session.Output.WriteLineAsync($"deployment {deployment.Name} is AVAILABLE: lag {Format.Bytes(deployment.Replication.LagBytes)}, {Format.Seconds(deployment.Replication.LagSeconds)}");
            }

            return ExitCodes.Ok;
        }

        throw new CliException($"deployment {deployment.Name} is {Format.Name(deployment.Status)}: {deployment.StatusReason}", $"see `teal events {deployment.Name}`; delete it with `teal delete {deployment.Name} --delete-target`");
    }

    private static Command List(CliSession session)
    {
        var command = new Command("list", "List deployments");
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Get, "/api/deployments", null, ct);
            if (session.Json(parse))
            {
                session.WriteJson(body);
                return ExitCodes.Ok;
            }

            var table = new Table("ID", "NAME", "STATUS", "BLUE", "GREEN", "REPLICATION", "LAG");
            foreach (var d in ApiClient.Parse<Deployment[]>(body))
            {
                table.Add(d.Id.Value, d.Name, Format.Name(d.Status), d.Blue, d.Green, Format.Name(d.Replication.State), Lag(d.Replication));
            }

            table.WriteTo(session.Output);
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Show(CliSession session)
    {
        var id = new Argument<string>("ID") { Description = "Deployment id or name" };
        var watch = new Option<bool>("--watch", "-w") { Description = "Redraw every second (lag, task progress) until Ctrl-C" };
        var command = new Command("show", "Show a deployment: status, replication and lag, tasks") { id, watch };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var path = $"/api/deployments/{Uri.EscapeDataString(parse.GetValue(id)!)}";
            try
            {
                if (parse.GetValue(watch) && session.IsTerminal && !session.Json(parse))
                {
                    // Redrawn in place (Spectre's live display) until Ctrl-C.
                    return await LiveView.RunAsync<int>(session, json: false, async update =>
                    {
                        while (true)
                        {
                            using var text = new StringWriter();
                            Render(text, ApiClient.Parse<Deployment>(await api.SendAsync(HttpMethod.Get, path, null, ct)));
                            update!(LiveView.Text(text.ToString()));
                            await Task.Delay(TimeSpan.FromSeconds(1), ct);
                        }
                    });
                }

                do
                {
                    var body = await api.SendAsync(HttpMethod.Get, path, null, ct);
                    if (session.Json(parse))
                    {
                        session.WriteJson(body);
                    }
                    else
                    {
                        Render(session.Output, ApiClient.Parse<Deployment>(body));
                    }

                    if (parse.GetValue(watch))
                    {
                        await Task.Delay(TimeSpan.FromSeconds(1), ct);
                    }
                }
                while (parse.GetValue(watch));
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                // Ctrl-C ends --watch.
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Verify(CliSession session)
    {
        var id = new Argument<string>("ID") { Description = "Deployment id or name" };
        var command = new Command("verify", "Compare blue and green table by table (row counts and checksums)") { id };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Post, $"/api/deployments/{Uri.EscapeDataString(parse.GetValue(id)!)}/verify", null, ct);
            var report = ApiClient.Parse<VerifyReport>(body);
            if (session.Json(parse))
            {
                session.WriteJson(body);
            }
            else
            {
                var table = new Table("TABLE", "BLUE ROWS", "GREEN ROWS", "MATCH");
                foreach (var t in report.Tables)
                {
                    var why = t.Problem ?? (t.DifferingPartitions.Count > 0 ? $"partitions that differ: {string.Join(", ", t.DifferingPartitions)}" : null);
                    if (t.DifferingKeys.Count > 0)
                    {
                        why = (why is null ? string.Empty : why + "; ") + $"keys that differ: {string.Join(", ", t.DifferingKeys)}";
                    }

                    table.Add(t.Table, t.BlueRows.ToString(CultureInfo.InvariantCulture), t.GreenRows.ToString(CultureInfo.InvariantCulture), t.Matches ? "yes" : why is null ? "NO" : $"NO: {why}");
                }

                table.WriteTo(session.Output);
                foreach (var s in report.Settings.Where(s => !s.Matches))
                {
                    await session.Output.WriteLineAsync($"setting {s.Name}: expected {s.Expected}, green has {s.Actual}");
                }

                await session.Output.WriteLineAsync($"at {report.Position}: {report.RowsPerSide} rows per side in {report.Seconds:0.0} s ({report.RowsPerSecond:0} rows/s per side)");
            }

            return report.Matches
                ? ExitCodes.Ok
                : throw new CliException($"blue and green differ: {report.Tables.Count(t => !t.Matches)} table(s), {report.Settings.Count(s => !s.Matches)} setting(s)", "see the report above; check `teal show` for DEGRADED replication");
        });
        return command;
    }

    private static Command AckDdl(CliSession session)
    {
        var id = new Argument<string>("ID") { Description = "Deployment id or name" };
        var command = new Command("ack-ddl", "Acknowledge that the DDL recorded on blue was applied on green") { id };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Post, $"/api/deployments/{Uri.EscapeDataString(parse.GetValue(id)!)}/ack-ddl", null, ct);
            if (session.Json(parse))
            {
                session.WriteJson(body);
            }
            else
            {
                var d = ApiClient.Parse<Deployment>(body);
                await session.Output.WriteLineAsync($"DDL acknowledged; replication is {Format.Name(d.Replication.State)}{(d.Replication.Reason is null ? string.Empty : $": {d.Replication.Reason}")}");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command ApplyDdl(CliSession session)
    {
        var id = new Argument<string>("ID") { Description = "Deployment id or name" };
        var command = new Command("apply-ddl", "Run the DDL recorded on blue on green (through Teal's session, past green's fence), then add what green still lacks") { id };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Post, $"/api/deployments/{Uri.EscapeDataString(parse.GetValue(id)!)}/apply-ddl", null, ct);
            var report = ApiClient.Parse<ApplyDdlReport>(body);
            if (session.Json(parse))
            {
                session.WriteJson(body);
            }
            else
            {
                foreach (var s in report.Statements)
                {
                    await session.Output.WriteLineAsync($"#{s.Id} {s.Outcome}: {Flat(s.Statement)}");
                }

                if (report.Added.Count > 0)
                {
                    await session.Output.WriteLineAsync($"added to green: {string.Join(", ", report.Added)}");
                }

                if (report.Statements.Count == 0 && report.Added.Count == 0)
                {
                    await session.Output.WriteLineAsync("nothing to apply: green has every recorded statement");
                }

                var r = report.Deployment.Replication;
                await session.Output.WriteLineAsync($"replication is {Format.Name(r.State)}{(r.Reason is null ? string.Empty : $": {r.Reason}")}");
            }

            var d = report.Deployment;
            if (d.Replication.PendingDdl.Count > 0)
            {
                var first = d.Replication.PendingDdl[0];
                // Only a PostgreSQL deployment records DDL that waits for green (MariaDB's binlog
                // carries it), so the command is psql's. It works on fenced green: Teal's login is
                // the one green accepts, and PGOPTIONS lifts the read-only default for this session only.
                var psql = $"PGOPTIONS='-c default_transaction_read_only=off' psql \"$(teal instance url {d.Green} --as-teal)\" -v ON_ERROR_STOP=1 -c {ShellQuote(first.Statement)}";
                throw new CliException(
                    $"{d.Replication.PendingDdl.Count} DDL statement(s) are still not on green, first #{first.Id} {first.CommandTag}",
                    $"apply it on green yourself ({psql}), then `teal ack-ddl {d.Name}`");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static string Flat(string statement)
    {
        var flat = string.Join(' ', statement.Split((char[])['\n', '\r', '\t', ' '], StringSplitOptions.RemoveEmptyEntries));
        return flat.Length <= 160 ? flat : flat[..160] + "…";
    }

    private static string ShellQuote(string text) => "'" + text.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    private static Command AddTables(CliSession session)
    {
        var id = new Argument<string>("ID") { Description = "Deployment id or name" };
        var command = new Command("add-tables", "Give green the tables created on blue after replication started, with their rows") { id };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Post, $"/api/deployments/{Uri.EscapeDataString(parse.GetValue(id)!)}/add-tables", null, ct);
            if (session.Json(parse))
            {
                session.WriteJson(body);
            }
            else
            {
                var added = ApiClient.Parse<AddTablesResult>(body).Tables;
                await session.Output.WriteLineAsync(added.Count == 0 ? "green lacked nothing: no schema, table, partition or column was missing" : $"added to green: {string.Join(", ", added)}");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Delete(CliSession session)
    {
        var id = new Argument<string>("ID") { Description = "Deployment id or name" };
        var deleteTarget = new Option<bool>("--delete-target") { Description = "Also remove a managed green (only before switchover)" };
        var command = new Command("delete", "Remove Teal's objects from blue and green and forget the deployment") { id, deleteTarget };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var target = parse.GetValue(id)!;
            await api.SendAsync(HttpMethod.Delete, $"/api/deployments/{Uri.EscapeDataString(target)}" + (parse.GetValue(deleteTarget) ? "?deleteTarget=true" : string.Empty), null, ct);
            if (!session.Json(parse))
            {
                await session.Output.WriteLineAsync($"deployment {target} deleted");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static void Render(TextWriter output, Deployment d)
    {
        var r = d.Replication;
        output.WriteLine($"deployment   {d.Name} ({d.Id})");
        output.WriteLine($"status       {Format.Name(d.Status)}{(d.StatusReason is null ? string.Empty : $": {d.StatusReason}")}");
        output.WriteLine($"blue         {d.Blue}");
        output.WriteLine($"green        {d.Green}{(d.GreenManaged ? " (managed)" : string.Empty)}");
        output.WriteLine($"database     {d.Database}");
        output.WriteLine($"replication  {Format.Name(r.State)}{(r.Reason is null ? string.Empty : $": {r.Reason}")}");
        output.WriteLine($"lag          {Lag(r)} (retained WAL {Format.Bytes(r.RetainedBytes)}; observed {Format.Time(r.ObservedAt)})");
        foreach (var reader in d.Readers)
        {
            output.WriteLine($"reader       {reader.Name} {reader.Address} {reader.State}, replay lag {Format.Bytes(reader.LagBytes)} / {Format.Seconds(reader.LagSeconds)}");
        }

        if (d.CdcSlots.Count > 0)
        {
            output.WriteLine($"cdc slots    {string.Join(", ", d.CdcSlots)}{(d.CdcWait ? " (cutovers wait for their consumers)" : string.Empty)}");
            foreach (var slot in r.CdcSlots)
            {
                var state = slot.Exists ? $"{slot.Plugin}, confirmed {slot.ConfirmedPosition ?? "-"}, behind {Format.Bytes(slot.LagBytes)}{(slot.Active ? ", consumer connected" : string.Empty)}" : "missing";
                output.WriteLine($"  {slot.Name} on {slot.Instance}: {state}");
            }
        }

        foreach (var warning in d.Warnings)
        {
            output.WriteLine($"warning      {warning.Message}{(warning.Hint is null ? string.Empty : $" (fix: {warning.Hint})")}");
        }

        if (d.Switchover is { } s)
        {
            output.WriteLine($"switchover   {Format.Name(s.Outcome)} {s.Phase}{(s.Reason is null ? string.Empty : $": {s.Reason}")}");
            if (s.Hint is not null)
            {
                output.WriteLine($"fix          {s.Hint}");
            }
        }

        output.WriteLine();
        var tasks = new Table("TASK", "STATUS", "PROGRESS", "MESSAGE");
        foreach (var t in d.Tasks)
        {
            tasks.Add(TaskNames.Of(t.Kind), Format.Name(t.Status), Percent(t.Percent), t.Message);
        }

        tasks.WriteTo(output);
        foreach (var ddl in r.PendingDdl)
        {
            output.WriteLine($"pending DDL #{ddl.Id} ({ddl.CommandTag}{(ddl.Replayable ? string.Empty : ", ran inside this query: not replayed")}): {ddl.Statement}");
        }

        if (r.PendingDdl.Count > 0)
        {
            output.WriteLine($"  fix: teal apply-ddl {d.Name}   (runs them on green; or apply them yourself, then teal ack-ddl {d.Name})");
        }

        if (r.Stalled)
        {
            output.WriteLine($"apply on green is STALLED{(r.ApplyError is null ? string.Empty : $": {r.ApplyError}")}; lag {Lag(r)} and growing");
        }

        foreach (var difference in r.SchemaDifferences)
        {
            output.WriteLine($"schema: {difference}");
        }

        if (r.SkippedTables.Count > 0 || r.SchemaDifferences.Count > 0)
        {
            var skipped = r.SkippedTables.Count > 0 ? $"tables not replicated to green: {string.Join(", ", r.SkippedTables)} " : string.Empty;
            output.WriteLine($"{skipped}(fix: teal add-tables {d.Name})");
        }
    }

    private static string Lag(ReplicationStatus r) => $"{Format.Bytes(r.LagBytes)} / {Format.Seconds(r.LagSeconds)}";

    private static string Percent(double? percent) => percent is null ? "-" : $"{percent:0}%";
}
