using System.Globalization;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Core.Events;
using Teal.Core.Hosting;
using Teal.Core.Instances;
using Teal.Core.Secrets;
using Teal.Core.State;

namespace Teal.Core.Deployments;

/// <summary>
/// What the API offers on deployments: create, read, verify, acknowledge DDL, add skipped
/// tables, delete. A create is refused — with every failed prerequisite reported and nothing
/// left on either side — before anything is stored; once accepted it continues in the
/// background (<see cref="CreateWorkflow"/>).
/// </summary>
public sealed partial class DeploymentService(
    IStateStore state,
    ISecretStore secrets,
    EngineRegistry engines,
    DeploymentLinks links,
    DeploymentRecorder recorder,
    CreateWorkflow workflow,
    BackgroundWork background,
    CreateOptions options,
    ILogger<DeploymentService> logger)
{
    public async Task<Deployment> CreateAsync(CreateDeploymentSpec spec, CancellationToken cancellationToken)
    {
        Names.Validate("deployment", spec.Name);
        if (await state.FindDeploymentAsync(spec.Name, cancellationToken) is not null)
        {
            throw new TealException("deployment.duplicate-name", $"a deployment named '{spec.Name}' already exists", "choose another name, or delete the old deployment first") { Kind = TealErrorKind.Conflict };
        }

        var blue = await RequireInstanceAsync(spec.Source, cancellationToken);
        await RefuseIfInUseAsync(blue, cancellationToken);
        if (blue.Role != InstanceRole.Writer)
        {
            throw new TealException("deployment.source-not-writer", $"instance '{blue.Name}' is a reader; blue must be a writer", "name the writer instance with --source");
        }

        if (spec.TargetConnection is not null && (spec.TargetEngineVersion is not null || spec.TargetParameters.Count > 0))
        {
            throw new TealException("deployment.target-conflict", "--target-connection names an existing green; --target-engine-version and --target-parameter apply to a green Teal creates", "use one or the other");
        }

        if (spec.TargetPassword is not null && spec.TargetConnection is null)
        {
            throw new TealException("deployment.password-without-connection", "a target password goes with --target-connection; a managed green gets a generated one", "leave out the target password options, or name an external green with --target-connection");
        }

        ServerParameters.Validate(spec.TargetParameters, "--target-parameter", engines.Engine(blue.Engine).SettingNamesHint);
        ValidateReaders(spec, blue);
        foreach (var slot in spec.CdcSlots.Where(s => s.Length is 0 or > 63 || !s.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '_')))
        {
            throw new TealException("deployment.invalid-cdc-slot", $"--cdc-slot '{slot}' is not a replication slot name", "slot names are 1–63 lower-case letters, digits and underscores");
        }

        if (spec.CdcWait && spec.CdcSlots.Count == 0)
        {
            throw new TealException("deployment.cdc-wait-without-slots", "--cdc-wait waits for the consumers of --cdc-slot slots, and none is named", "name each consumer's slot with --cdc-slot NAME");
        }

        if (spec.CopyParallelism is < 1 or > Deployment.MaxCopyParallelism)
        {
            throw new TealException("deployment.copy-parallelism", $"the copy parallelism must be between 1 and {Deployment.MaxCopyParallelism}", "--copy-parallelism 1 keeps the native copy; leave it out for one session per core");
        }

        var engine = engines.Engine(blue.Engine);
        var id = DeploymentId.New();
        if (spec.TargetConnection is null)
        {
            // Everything that can refuse without green runs before green is built: a refusal
            // after initdb would cost a server start and a removal, and a failure after the
            // create was accepted would leave the operator a broken deployment.
            var plan = new GreenPlan(DeploymentLinks.ObjectName(id), links.Connection(blue), spec.TargetEngineVersion ?? blue.MajorVersion.ToString(System.Globalization.CultureInfo.InvariantCulture))
            {
                Tables = spec.Tables,
                CopyRoles = spec.CopyRoles,
                CdcSlots = spec.CdcSlots,
            };
            (await engine.CheckBeforeGreenAsync(plan, cancellationToken)).ThrowIfFailed("deployment.prerequisites-failed", $"cannot create deployment '{spec.Name}'");
        }

        var greenName = $"{blue.Name}-green-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3))}";
        var (green, greenPassword) = spec.TargetConnection is { } target
            ? await ExternalGreenAsync(engine, greenName, target, spec.TargetPassword, blue, cancellationToken)
            : await ManagedGreenAsync(greenName, spec, blue, cancellationToken);

        var now = recorder.Time.GetUtcNow();
        var deployment = new Deployment(id, spec.Name, DeploymentStatus.Provisioning)
        {
            Blue = blue.Name,
            Green = green.Name,
            GreenManaged = green.Managed is not null,
            Database = blue.Database,
            Tags = spec.Tags,
            TargetParameters = spec.TargetParameters,
            Tables = spec.Tables,
            CopyRoles = spec.CopyRoles,
            CopyParallelism = spec.CopyParallelism ?? Deployment.DefaultCopyParallelism,
            ReverseReplication = spec.ReverseReplication,
            CdcSlots = spec.CdcSlots,
            CdcWait = spec.CdcWait,
            CreatedAt = now,
            UpdatedAt = now,
            Tasks =
            [
                new(DeploymentTaskKind.ProvisionGreen, DeploymentTaskStatus.Completed) { StartedAt = green.CreatedAt, CompletedAt = now, Percent = 100, Message = green.Managed is null ? $"external green {green.Address}" : $"managed {green.Engine.DisplayName()} {green.Version} on {green.Address}" },
                new(DeploymentTaskKind.CopySchema, DeploymentTaskStatus.Pending),
                new(DeploymentTaskKind.CopyData, DeploymentTaskStatus.Pending),
                new(DeploymentTaskKind.AnalyzeGreen, DeploymentTaskStatus.Pending),
                .. spec.TargetReaders > 0 ? [new DeploymentTask(DeploymentTaskKind.CreateTopology, DeploymentTaskStatus.Pending) { Message = $"{spec.TargetReaders} reader(s) of green" }] : Array.Empty<DeploymentTask>(),
                new(DeploymentTaskKind.CatchUp, DeploymentTaskStatus.Pending),
            ],
            TargetReaders = spec.TargetReaders,
        };

        var greenConnection = ConnectionInfo.For(green, greenPassword).WithDatabase(deployment.Database);
        var blueConnection = links.Connection(blue).WithDatabase(deployment.Database);
        try
        {
            var link = engine.Link(links.Spec(deployment, blue, green) with { Blue = blueConnection, Green = greenConnection });
            var report = await link.CheckPrerequisitesAsync(cancellationToken);
            report.ThrowIfFailed("deployment.prerequisites-failed", $"cannot create deployment '{spec.Name}'");
            deployment = deployment with { Warnings = report.Results.Where(r => r.Outcome == Guardrails.CheckOutcome.Warn).ToList() };

            green = green with { SecretRef = greenPassword is null ? null : $"instance/{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8))}" };
            if (green.SecretRef is not null)
            {
                secrets.Write(green.SecretRef, greenPassword!);
            }

            var instanceStored = false;
            try
            {
                await state.AddInstanceAsync(green, cancellationToken);
                instanceStored = true;
                await state.AddDeploymentAsync(deployment with { Green = green.Name }, cancellationToken);
            }
            catch
            {
                if (instanceStored)
                {
                    await state.RemoveInstanceAsync(green.Name, CancellationToken.None);
                }

                throw;
            }
        }
        catch
        {
            // Refused or failed before anything was stored: leave nothing behind, the green's
            // password included.
            if (green.SecretRef is not null)
            {
                secrets.Remove(green.SecretRef);
            }

            await DiscardGreenAsync(green, CancellationToken.None);
            throw;
        }

        // Stored: the create is accepted. A client that goes away now must not keep the
        // workflow from starting (the deployment would sit in PROVISIONING until a restart).
        await recorder.EventAsync(
            id,
            EventKinds.Created,
            $"deployment '{spec.Name}' created: blue {blue.Name} ({blue.Engine.DisplayName()} {blue.Version}) → green {green.Name} ({green.Engine.DisplayName()} {green.Version})",
            CancellationToken.None,
            new Dictionary<string, string> { ["blue"] = blue.Name, ["green"] = green.Name, ["greenVersion"] = green.Version });
        foreach (var warning in deployment.Warnings)
        {
            await recorder.EventAsync(id, EventKinds.PrerequisiteWarning, $"{warning.Message}{(warning.Hint is null ? string.Empty : $" (fix: {warning.Hint})")}", cancellationToken, new Dictionary<string, string> { ["check"] = warning.Name });
        }

        LogCreated(id, spec.Name, blue.Name, green.Name);
        StartWorkflow(id);
        return await recorder.GetAsync(id, CancellationToken.None);
    }

    /// <summary>Resumes create workflows of deployments left PROVISIONING when Teal stopped.</summary>
    public async Task ResumeAsync(CancellationToken cancellationToken)
    {
        foreach (var d in await state.ListDeploymentsAsync(cancellationToken))
        {
            if (d.Status == DeploymentStatus.Provisioning)
            {
                StartWorkflow(d.Id);
            }
        }
    }

    public Task<IReadOnlyList<Deployment>> ListAsync(CancellationToken cancellationToken) => state.ListDeploymentsAsync(cancellationToken);

    /// <summary>A deployment by id (<c>bgd-…</c>) or by name.</summary>
    public async Task<Deployment> GetAsync(string idOrName, CancellationToken cancellationToken)
    {
        var found = DeploymentId.TryParse(idOrName, out var id)
            ? await state.GetDeploymentAsync(id, cancellationToken)
            : await state.FindDeploymentAsync(idOrName, cancellationToken);
        return found ?? throw new TealException("deployment.not-found", $"no deployment '{idOrName}'", "see `teal list` for ids and names") { Kind = TealErrorKind.NotFound };
    }

    public async Task<VerifyReport> VerifyAsync(string idOrName, IProgress<TableVerification>? progress, CancellationToken cancellationToken)
    {
        var deployment = await GetAsync(idOrName, cancellationToken);
        RequireReplicating(deployment, "verify");
        var link = await links.GetAsync(deployment, cancellationToken);
        var report = await link.VerifyAsync(progress, cancellationToken);
        var differing = report.Tables.Count(t => !t.Matches);
        var message = report.Matches
            ? $"verify: {report.Tables.Count} tables, {report.RowsPerSide} rows per side, all equal ({report.RowsPerSecond:0} rows/s per side)"
            : $"verify: {differing} of {report.Tables.Count} tables differ";
        await recorder.EventAsync(deployment.Id, EventKinds.Verified, message, cancellationToken, new Dictionary<string, string>
        {
            ["matches"] = report.Matches ? "true" : "false",
            ["position"] = report.Position,
            // For the metrics and the dashboard: the verify's figures without re-running it.
            ["tables"] = report.Tables.Count.ToString(CultureInfo.InvariantCulture),
            ["differingTables"] = differing.ToString(CultureInfo.InvariantCulture),
            ["rows"] = report.RowsPerSide.ToString(CultureInfo.InvariantCulture),
            ["seconds"] = report.Seconds.ToString("0.###", CultureInfo.InvariantCulture),
        });
        return report;
    }

    /// <summary>The operator applied the DDL recorded on blue to green; replication may leave DEGRADED.</summary>
    public async Task<Deployment> AcknowledgeDdlAsync(string idOrName, CancellationToken cancellationToken)
    {
        var deployment = await GetAsync(idOrName, cancellationToken);
        var link = await links.GetAsync(deployment, cancellationToken);
        var pending = (await link.ReadStatusAsync(cancellationToken)).PendingDdl;
        if (pending.Count == 0)
        {
            throw new TealException("deployment.no-pending-ddl", $"deployment '{deployment.Name}' has no unacknowledged DDL", "nothing to do");
        }

        await link.AcknowledgeDdlAsync(pending.Max(p => p.Id), cancellationToken);
        await recorder.EventAsync(
            deployment.Id,
            EventKinds.DdlAcknowledged,
            $"{pending.Count} DDL statement(s) acknowledged as applied on green",
            cancellationToken,
            new Dictionary<string, string> { ["statements"] = string.Join("\n", pending.Select(p => p.Statement)) });
        return await RefreshAsync(deployment, link, cancellationToken);
    }

    /// <summary>
    /// Runs the DDL recorded on blue on green through Teal's session (which writes through
    /// green's fence), then does what <see cref="AddMissingTablesAsync"/> does: new tables join
    /// the subscription with their rows, and what could not be replayed is built from blue's
    /// catalogs. The report says what happened to each statement and what is still pending.
    /// </summary>
    public async Task<ApplyDdlReport> ApplyDdlAsync(string idOrName, CancellationToken cancellationToken)
    {
        var deployment = await GetAsync(idOrName, cancellationToken);
        RequireReplicating(deployment, "apply DDL");
        var link = await links.GetAsync(deployment, cancellationToken);
        var statements = await link.ApplyDdlAsync(cancellationToken);
        var added = await link.AddMissingTablesAsync(cancellationToken);
        var applied = statements.Where(s => !s.Outcome.StartsWith("failed", StringComparison.Ordinal) && !s.Outcome.StartsWith("not run", StringComparison.Ordinal)).ToList();
        if (applied.Count > 0)
        {
            await recorder.EventAsync(
                deployment.Id,
                EventKinds.DdlApplied,
                $"{applied.Count} DDL statement(s) applied on green by Teal",
                cancellationToken,
                new Dictionary<string, string> { ["statements"] = string.Join("\n", applied.Select(s => $"#{s.Id} {s.Outcome}: {s.Statement}")) });
        }

        if (added.Count > 0)
        {
            await recorder.EventAsync(deployment.Id, EventKinds.TableAdded, $"added to green: {string.Join(", ", added)}", cancellationToken, new Dictionary<string, string> { ["tables"] = string.Join(",", added) });
        }

        return new ApplyDdlReport(statements, added, await RefreshAsync(deployment, link, cancellationToken));
    }

    /// <summary>Gives green the tables created on blue after replication started, with their rows.</summary>
    public async Task<IReadOnlyList<string>> AddMissingTablesAsync(string idOrName, CancellationToken cancellationToken)
    {
        var deployment = await GetAsync(idOrName, cancellationToken);
        RequireReplicating(deployment, "add tables");
        var link = await links.GetAsync(deployment, cancellationToken);
        var added = await link.AddMissingTablesAsync(cancellationToken);
        if (added.Count > 0)
        {
            await recorder.EventAsync(deployment.Id, EventKinds.TableAdded, $"added to green: {string.Join(", ", added)}", cancellationToken, new Dictionary<string, string> { ["tables"] = string.Join(",", added) });
        }

        await RefreshAsync(deployment, link, cancellationToken);
        return added;
    }

    /// <summary>
    /// Removes Teal's objects from both sides and forgets the deployment. With
    /// <paramref name="deleteTarget"/> a managed green goes too — refused after a switchover,
    /// when "green" is production.
    /// </summary>
    public async Task DeleteAsync(string idOrName, bool deleteTarget, CancellationToken cancellationToken)
    {
        var deployment = await GetAsync(idOrName, cancellationToken);
        if (deployment.Status is DeploymentStatus.SwitchoverInProgress or DeploymentStatus.SwitchoverStopped)
        {
            throw new TealException("deployment.switchover-in-progress", $"deployment '{deployment.Name}' is switching over", "wait for the switchover to finish or roll back (a stopped one: fix the cause and run `teal switchover ID --resume`)") { Kind = TealErrorKind.Conflict };
        }

        if (deleteTarget && (deployment.Status == DeploymentStatus.SwitchoverCompleted || deployment.Reversed))
        {
            throw new TealException("deployment.target-is-production", $"green '{deployment.Green}' became production at switchover; --delete-target would delete it", "delete without --delete-target") { Kind = TealErrorKind.Refused };
        }

        if (deleteTarget && !deployment.GreenManaged)
        {
            throw new TealException("deployment.target-not-managed", $"green '{deployment.Green}' was provisioned by you, not by Teal; Teal never deletes it", "delete without --delete-target and remove the server yourself");
        }

        await background.CancelAsync(WorkKey(deployment.Id));
        // Held to the end: a monitor round in progress finishes first, and none starts before
        // the deployment is gone (a heartbeat written while Teal's objects are dropped keeps
        // blue's schema in use, and a status read races the removal on the same link).
        await using var hold = await links.HoldAsync(deployment.Id, cancellationToken);
        await recorder.UpdateAsync(deployment.Id, d => d with { Status = DeploymentStatus.Deleting }, cancellationToken);
        await recorder.EventAsync(deployment.Id, EventKinds.Deleting, $"deleting deployment '{deployment.Name}'", cancellationToken);

        // Green's readers were made for this deployment: they go with it while green is staged.
        // After a switchover they are production's readers and stay (as green itself does).
        if (!deployment.Reversed && deployment.Status != DeploymentStatus.SwitchoverCompleted)
        {
            var readers = await GreenTopology.RemoveAsync(deployment, state, secrets, engines, links, cancellationToken);
            if (readers.Count > 0)
            {
                await recorder.EventAsync(deployment.Id, EventKinds.Deleting, $"green's readers removed: {string.Join(", ", readers)}", cancellationToken);
            }
        }

        // A failed create already removed Teal's objects and then its managed green: nothing is left to remove.
        var removedByFailedCreate = deployment.Status == DeploymentStatus.InvalidConfiguration && await state.GetInstanceAsync(deployment.Green, cancellationToken) is null;
        if (!removedByFailedCreate)
        {
            var link = await links.GetAsync(deployment, cancellationToken);
            // Reversed (green → old blue): the old blue keeps its fence, as after `teal finish`.
            await (deployment.Reversed ? link.FinishAsync(cancellationToken) : link.RemoveAsync(cancellationToken));
            await hold.ForgetAsync();
        }

        if (deleteTarget && await state.GetInstanceAsync(deployment.Green, cancellationToken) is { } green)
        {
            await engines.Provisioner(green.Engine).RemoveAsync(green, cancellationToken);
            await state.RemoveInstanceAsync(green.Name, cancellationToken);
            if (green.SecretRef is not null)
            {
                secrets.Remove(green.SecretRef);
            }
        }

        await state.RemoveDeploymentAsync(deployment.Id, cancellationToken);
        var what = deleteTarget ? $" and managed green '{deployment.Green}'" : string.Empty;
        await recorder.EventAsync(deployment.Id, EventKinds.Deleted, $"deployment '{deployment.Name}'{what} deleted", cancellationToken, new Dictionary<string, string> { ["name"] = deployment.Name });
        LogDeleted(deployment.Id, deleteTarget);
    }

    public static string WorkKey(DeploymentId id) => $"create/{id}";

    private void StartWorkflow(DeploymentId id) => background.TryStart(WorkKey(id), ct => workflow.RunAsync(id, ct));

    /// <summary>Reads the state right after acting; a change (the return from DEGRADED above all) is an event, as when the monitor sees it.</summary>
    private async Task<Deployment> RefreshAsync(Deployment deployment, IReplicationLink link, CancellationToken cancellationToken)
    {
        var snapshot = await link.ReadStatusAsync(cancellationToken);
        ReplicationStatus? previous = null;
        var updated = await recorder.UpdateAsync(
            deployment.Id,
            d =>
            {
                previous = d.Replication;
                return d with { Replication = ReplicationMonitor.ToStatus(snapshot, recorder.Time.GetUtcNow(), d.Name) };
            },
            cancellationToken);
        if (previous is not null)
        {
            await ReplicationMonitor.RecordTransitionAsync(recorder, deployment.Id, previous, updated.Replication, cancellationToken);
        }

        return updated;
    }

    private static void RequireReplicating(Deployment deployment, string what)
    {
        if (deployment.Status is not (DeploymentStatus.Available or DeploymentStatus.SwitchoverFailed or DeploymentStatus.Provisioning))
        {
            throw new TealException("deployment.not-replicating", $"cannot {what}: deployment '{deployment.Name}' is {deployment.Status}", "this needs blue → green replication running") { Kind = TealErrorKind.Refused };
        }
    }

    private void ValidateReaders(CreateDeploymentSpec spec, Instance blue)
    {
        if (spec.TargetReaders is < 0 or > GreenTopology.MaxReaders)
        {
            throw new TealException("deployment.target-readers-invalid", $"--target-readers must be between 0 and {GreenTopology.MaxReaders}, not {spec.TargetReaders}", $"give a number of readers from 0 to {GreenTopology.MaxReaders}");
        }

        if (spec.TargetReaders > 0 && spec.TargetConnection is not null)
        {
            throw new TealException("deployment.target-conflict", "--target-readers copies a green Teal creates; an external green's readers are yours to make", "leave out --target-readers, or let Teal create green (no --target-connection)");
        }

        if (spec.TargetReaders > 0 && !engines.Provisioner(blue.Engine).CreatesReaders)
        {
            throw new TealException("deployment.readers-unsupported", $"Teal cannot make readers of a {blue.Engine.DisplayName()} green yet ('{blue.Name}' is {blue.Engine.DisplayName()})", "create the deployment without --target-readers");
        }
    }

    private async Task<Instance> RequireInstanceAsync(string name, CancellationToken cancellationToken) =>
        await state.GetInstanceAsync(name, cancellationToken)
        ?? throw new TealException("instance.not-found", $"no instance named '{name}'", "register it with `teal instance add NAME --connection …` (see `teal instance list`)") { Kind = TealErrorKind.NotFound };

    private async Task RefuseIfInUseAsync(Instance blue, CancellationToken cancellationToken)
    {
        foreach (var d in await state.ListDeploymentsAsync(cancellationToken))
        {
            if (d.Status != DeploymentStatus.SwitchoverCompleted && (d.Blue == blue.Name || d.Green == blue.Name))
            {
                throw new TealException("deployment.instance-in-use", $"instance '{blue.Name}' already belongs to deployment '{d.Name}' ({d.Id})", "finish or delete that deployment first") { Kind = TealErrorKind.Conflict };
            }
        }
    }

    private async Task<(Instance Green, string? Password)> ManagedGreenAsync(string name, CreateDeploymentSpec spec, Instance blue, CancellationToken cancellationToken)
    {
        var version = spec.TargetEngineVersion ?? blue.MajorVersion.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var provisioned = await engines.Provisioner(blue.Engine).CreateAsync(
            new ManagedInstanceRequest(name, version, Path.Combine(options.InstancesDirectory, name))
            {
                Parameters = spec.TargetParameters,
                Database = blue.Database,
                // Blue's user and password: applications that log in to blue as that user
                // (often `postgres`) log in to green the same way after the switchover.
                SuperUser = blue.User,
                Password = links.Connection(blue).Password,
            },
            cancellationToken);
        return (provisioned.Instance, provisioned.Password);
    }

    private async Task<(Instance Green, string? Password)> ExternalGreenAsync(IEngine engine, string name, string connectionText, string? password, Instance blue, CancellationToken cancellationToken)
    {
        var connection = engine.ParseConnection(connectionText).WithPassword(password);
        var probe = await engine.ProbeAsync(connection, cancellationToken);
        var green = new Instance(name, blue.Engine)
        {
            Version = probe.Version,
            Host = connection.Host,
            Port = connection.Port,
            User = connection.User,
            Database = blue.Database,
            Options = connection.Options,
            CreatedAt = recorder.Time.GetUtcNow(),
        };
        return (green, connection.Password);
    }

    private async Task DiscardGreenAsync(Instance green, CancellationToken cancellationToken)
    {
        if (green.Managed is null)
        {
            return;
        }

        try
        {
            await engines.Provisioner(green.Engine).RemoveAsync(green, cancellationToken);
        }
        catch (Exception ex) when (ex is TealException or IOException)
        {
            LogDiscardFailed(ex, green.Name, green.Managed.Directory);
        }
    }

    [LoggerMessage(EventId = 1300, Level = LogLevel.Information, Message = "Deployment {DeploymentId} '{Name}' created: {Blue} -> {Green}")]
    private partial void LogCreated(DeploymentId deploymentId, string name, string blue, string green);

    [LoggerMessage(EventId = 1301, Level = LogLevel.Information, Message = "Deployment {DeploymentId} deleted (managed green removed: {DeleteTarget})")]
    private partial void LogDeleted(DeploymentId deploymentId, bool deleteTarget);

    [LoggerMessage(EventId = 1302, Level = LogLevel.Error, Message = "Could not remove the managed green {Name} in {Directory} after a refused create; remove it by hand")]
    private partial void LogDiscardFailed(Exception exception, string name, string directory);
}
