using System.Globalization;
using Teal.Core.Errors;
using Teal.Processes;

namespace Teal.Postgres.PgBouncer;

/// <summary>What <see cref="PgBouncerEndpoint.ValidateAsync"/> found: the PgBouncer and the entry Teal will move.</summary>
public sealed record PgBouncerValidation(string Version, PgBouncerDatabase Live, TimeSpan? HeldClientTimeout);

/// <summary>The checks run when the operator adds a PgBouncer endpoint.</summary>
public sealed partial class PgBouncerEndpoint
{
    /// <summary>
    /// Everything the endpoint needs, checked when the operator adds it: the console answers,
    /// the user is an admin, the entry is in the ini file and in PgBouncer and both agree, and
    /// the file can be replaced. Each failure is a <see cref="TealException"/> with its fix.
    /// </summary>
    public async Task<PgBouncerValidation> ValidateAsync(CancellationToken cancellationToken)
    {
        await using var console = await PgBouncerConsole.OpenAsync(_spec, _password, Name, cancellationToken);
        var versionRows = (await console.RunAsync("SHOW VERSION", cancellationToken)).Rows;
        var version = versionRows.Count > 0 ? versionRows[0][0] ?? "PgBouncer" : "PgBouncer";

        // The console has no "am I admin" query. RESUME of a database that cannot exist is
        // refused with "no such database" for an admin and "admin access needed" for a stats
        // user, and changes nothing either way.
        try
        {
            await console.RunAsync($"RESUME {PgBouncerConsole.Quote("teal_admin_check_" + Guid.NewGuid().ToString("N"))}", cancellationToken);
        }
        catch (TealException ex) when (ex.Code == "endpoint.pgbouncer-command-failed")
        {
            // An admin: the refusal was about the made-up database.
        }

        var entry = await ReadEntryAsync(cancellationToken);
        var live = await console.ShowDatabaseAsync(cancellationToken);
        if (live is null)
        {
            var conffile = await console.ShowConfigAsync("conffile", cancellationToken);
            throw new TealException(
                "endpoint.pgbouncer-database-unknown",
                $"PgBouncer at {_spec.AdminHost}:{_spec.AdminPort} has no database '{_spec.Database}' although {_spec.ConfigFile} defines it",
                $"RELOAD PgBouncer, or give the ini it runs with (its conffile is {conffile ?? "unknown"})");
        }

        var fromFile = new PgBouncerDatabase(
            entry.Name,
            entry["host"],
            int.TryParse(entry["port"], CultureInfo.InvariantCulture, out var port) ? port : 5432,
            entry["dbname"] ?? entry.Name,
            null,
            false,
            false);
        if (!string.Equals(fromFile.Host ?? "", live.Host ?? "", StringComparison.OrdinalIgnoreCase) || fromFile.Port != live.Port || fromFile.Database != live.Database)
        {
            throw new TealException(
                "endpoint.pgbouncer-config-mismatch",
                $"'{_spec.Database}' in {_spec.ConfigFile} points at {fromFile} but PgBouncer runs it against {live}",
                "RELOAD PgBouncer if the file was edited since, or give the ini file PgBouncer really reads");
        }

        CheckWritable();
        if (ProcessRunner.IsRoot)
        {
            _configOwner = await AtomicFile.ReadOwnerAsync(_spec.ConfigFile, cancellationToken);
        }

        return new PgBouncerValidation(version, live, await console.HeldClientTimeoutAsync(cancellationToken));
    }

    /// <summary>The flip opens the file's directory for a new file and renames it over the file: check both now.</summary>
    private void CheckWritable()
    {
        var target = AtomicFile.ResolveTarget(_spec.ConfigFile);
        var probe = Path.Combine(Path.GetDirectoryName(target) ?? "/", $".teal-write-check-{Guid.NewGuid():N}");
        try
        {
            using (File.Open(target, FileMode.Open, FileAccess.ReadWrite))
            {
            }

            using (File.Create(probe))
            {
            }

            File.Delete(probe);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new TealException(
                "endpoint.pgbouncer-config-not-writable",
                $"Teal cannot replace {target}: {ex.Message}",
                "Teal rewrites the entry's line at switchover: make the file and its directory writable by the user Teal runs as");
        }
    }
}
