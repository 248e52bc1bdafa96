using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Core.Guardrails;
using Teal.Core.Instances;
using Teal.Postgres.Connections;
using Teal.Postgres.Replication;

namespace Teal.Postgres.Engines;

/// <summary>The PostgreSQL engine: probes servers, parses connection strings and opens deployments' replication links.</summary>
public sealed class PostgresEngine(PostgresEngineCatalog catalog, TimeProvider time) : IEngine
{
    public EngineKind Kind => EngineKind.Postgres;

    public string UriScheme => "postgresql";

    /// <summary>See <see cref="SettingNamesHint"/>.</summary>
    public const string SettingNames = "use the setting's name as SHOW and pg_settings spell it: letters, digits and underscores, optionally one dot (e.g. work_mem, auto_explain.log_min_duration)";

    public string SettingNamesHint => SettingNames;

    /// <summary>Connects once (no pooling) and reads version, superuser and recovery state.</summary>
    public async Task<InstanceProbe> ProbeAsync(ConnectionInfo connection, CancellationToken cancellationToken)
    {
        await using var dataSource = PostgresConnections.DataSource(connection, pooling: false);
        await using var conn = await PostgresConnections.OpenAsync(dataSource, connection, "server", cancellationToken);
        await using var cmd = new NpgsqlCommand(
            "SELECT current_setting('server_version'), (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), pg_is_in_recovery()",
            conn);
        await using var reader = await cmd.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        // server_version may carry a distribution suffix ("15.18 (Debian 15.18-0+deb12u1)").
        var version = reader.GetString(0).Split(' ', 2)[0];
        return new InstanceProbe(version, reader.GetBoolean(1)) { InRecovery = reader.GetBoolean(2) };
    }

    public ConnectionInfo ParseConnection(string text) => ConnectionStrings.Parse(text);

    public IReplicationLink Link(LinkSpec spec) => new PostgresReplicationLink(spec, catalog, time);

    /// <summary>A fenced PostgreSQL server admits only Teal's own login role, so the unfence logs in as it.</summary>
    public Task<IReadOnlyList<string>> UnfenceAsync(ConnectionInfo registered, string? controlPassword, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(registered);
        return controlPassword is null
            ? throw new TealException("instance.not-fenced", $"Teal has never fenced {registered} (it has no login of its own there)", null) { Kind = TealErrorKind.NotFound }
            : Fencing.LiftAllAsync(registered with { User = Teal.Core.Deployments.DeploymentLinks.ControlUser, Password = controlPassword }, cancellationToken);
    }

    /// <summary>ALTER ROLE as the role itself (a superuser may change its own password), with statement logging off.</summary>
    public async Task ChangeControlPasswordAsync(ConnectionInfo control, string newPassword, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(control);
        await using var dataSource = PostgresConnections.DataSource(control, pooling: false);
        await using var conn = await PostgresConnections.OpenAsync(dataSource, control, "the instance", cancellationToken);
        // The statement holds the password: keep it out of the server log, also when it fails.
        await conn.ExecuteAsync("SET log_statement = 'none'; SET log_min_error_statement = 'panic'", cancellationToken);
        try
        {
            await conn.ExecuteAsync($"ALTER ROLE {Teal.Core.Deployments.DeploymentLinks.ControlUser} PASSWORD {Sql.Literal(newPassword)}", cancellationToken);
        }
        catch (Npgsql.PostgresException ex)
        {
            // Npgsql keeps the statement on the exception: rethrow without it.
            throw new TealException("instance.rotate-failed", $"changing the password of {Teal.Core.Deployments.DeploymentLinks.ControlUser} on {control.Address} failed: {ex.MessageText} ({ex.SqlState})", "the password Teal holds is unchanged");
        }
    }

    public async Task<CheckReport> CheckBeforeGreenAsync(GreenPlan plan, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(plan);
        await using var dataSource = PostgresConnections.DataSource(plan.Blue, pooling: false);
        await using var blue = await PostgresConnections.OpenAsync(dataSource, plan.Blue, "blue", cancellationToken);
        var results = await PrerequisiteChecks.BlueAsync(blue, new BlueScope(plan.Name, plan.Tables, plan.CopyRoles) { CdcSlots = plan.CdcSlots }, catalog, cancellationToken);
        results.Add(await GreenEngineAsync(plan.GreenVersion, await PrerequisiteChecks.MajorVersionAsync(blue, cancellationToken), cancellationToken));
        return new CheckReport(results);
    }

    /// <summary>Binaries of the requested version exist, and are not older than blue (logical replication goes forward only).</summary>
    private async Task<CheckResult> GreenEngineAsync(string version, int blueMajor, CancellationToken cancellationToken)
    {
        EngineBinaries binaries;
        try
        {
            binaries = await catalog.ResolveAsync(version, cancellationToken);
        }
        catch (TealException ex)
        {
            return CheckResult.Fail("green.version", ex.Message, ex.Hint ?? "see `teal engine list`");
        }

        return binaries.MajorVersion >= blueMajor
            ? CheckResult.Pass("green.version", $"green will run PostgreSQL {binaries.Version}, blue runs {blueMajor}")
            : CheckResult.Fail("green.version", $"green would run PostgreSQL {binaries.Version}, older than blue's {blueMajor}", "green must run the same or a newer version: pick a newer --target-engine-version");
    }
}
