using Npgsql;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Postgres.Connections;

namespace Teal.Postgres.Replication;

/// <summary>
/// The pooled connections of one link: blue and green in the deployment's database, green's
/// maintenance database (the deployment's database may not exist there yet), and one
/// "client-like" pool per side whose sessions do not override <c>default_transaction_read_only</c>,
/// used to observe that the fence's second layer is in effect.
/// <para>
/// Every one of them logs in as Teal's own role (<see cref="ControlRole"/>), not as the
/// registered user: the fence takes LOGIN from every other role, the registered one included,
/// because applications often log in as that same user and nothing in PostgreSQL could tell
/// their sessions from Teal's. The role is created on first use by the registered user.
/// </para>
/// </summary>
internal sealed class LinkSessions(LinkSpec spec) : IAsyncDisposable
{
    /// <summary>
    /// Teal's login role on both sides; its password is generated and kept by Teal only, unless
    /// the operator created the role and registered the side with it (least privilege).
    /// </summary>
    public const string ControlRole = Teal.Core.Deployments.DeploymentLinks.ControlUser;

    private readonly Lazy<NpgsqlDataSource> _blue = new(() => PostgresConnections.DataSource(Control(spec, Side.Blue)));
    private readonly Lazy<NpgsqlDataSource> _green = new(() => PostgresConnections.DataSource(Control(spec, Side.Green)));
    private readonly Lazy<NpgsqlDataSource> _greenAdmin = new(() => PostgresConnections.DataSource(Control(spec, Side.Green).WithDatabase(MaintenanceDatabase)));
    private readonly Lazy<NpgsqlDataSource> _blueObserver = new(() => Observer(Control(spec, Side.Blue)));
    private readonly Lazy<NpgsqlDataSource> _greenObserver = new(() => Observer(Control(spec, Side.Green)));
    private readonly SemaphoreSlim _ensure = new(1, 1);

    /// <summary>Where Teal connects on green before the deployment's database exists.</summary>
    public const string MaintenanceDatabase = "postgres";

    public LinkSpec Spec => spec;

    /// <summary>How Teal's sessions log in to a side (as <see cref="ControlRole"/>, in the deployment's database).</summary>
    public ConnectionInfo Connection(Side side) => Control(spec, side);

    /// <summary>The user the operator registered for a side: used only to create the control role and to judge privileges.</summary>
    public ConnectionInfo Registered(Side side) => side == Side.Blue ? spec.Blue : spec.Green;

    public static string Role(Side side) => side == Side.Blue ? "blue" : "green";

    /// <summary>Whether this session's login role is a superuser (Teal's own role may not be, on a blue registered with least privilege).</summary>
    public static async Task<bool> IsSuperuserAsync(NpgsqlConnection connection, CancellationToken cancellationToken) =>
        await connection.ScalarAsync<bool>("SELECT rolsuper FROM pg_roles WHERE rolname = current_user", cancellationToken);

    public Task<NpgsqlConnection> OpenAsync(Side side, CancellationToken cancellationToken) =>
        OpenControlAsync(side == Side.Blue ? _blue.Value : _green.Value, side, Connection(side), cancellationToken);

    public Task<NpgsqlConnection> OpenGreenAdminAsync(CancellationToken cancellationToken) =>
        OpenControlAsync(_greenAdmin.Value, Side.Green, Connection(Side.Green).WithDatabase(MaintenanceDatabase), cancellationToken);

    /// <summary>A session that sees <c>default_transaction_read_only</c> as a client would.</summary>
    public Task<NpgsqlConnection> OpenObserverAsync(Side side, CancellationToken cancellationToken) =>
        OpenControlAsync(side == Side.Blue ? _blueObserver.Value : _greenObserver.Value, side, Connection(side), cancellationToken);

    /// <summary>
    /// A one-off session as the registered user (not pooled), for the prerequisites: they judge
    /// that user's privileges, and run before Teal has created anything.
    /// </summary>
    public async Task<NpgsqlConnection> OpenRegisteredAsync(Side side, string? database, CancellationToken cancellationToken)
    {
        var connection = database is null ? Registered(side) : Registered(side).WithDatabase(database);
        var conn = new NpgsqlConnection(PostgresConnections.Builder(connection, pooling: false).ConnectionString);
        try
        {
            await conn.OpenAsync(cancellationToken);
            return conn;
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
        {
            await conn.DisposeAsync();
            throw PostgresConnections.Classify(ex, connection, Role(side));
        }
    }

    /// <summary>
    /// Fills the pools the switchover uses with open sessions: two per side in the deployment's
    /// database (sequence sync reads both sides at once, a step may hold one while opening
    /// another) and one observer per side. Each opens and goes back to its pool, where it stays
    /// for the pool's idle lifetime (minutes), well past a switchover. The fence's steps run
    /// PL/pgSQL blocks (<see cref="Fencing"/>): the sessions that run them load the language
    /// here, which the first block in a backend otherwise does inside the write pause (9 ms
    /// per backend on an idle machine, measured against 0.7 ms for a later block).
    /// </summary>
    public async Task WarmUpAsync(CancellationToken cancellationToken)
    {
        Func<Task<NpgsqlConnection>>[] opens =
        [
            () => OpenWithPlpgsqlAsync(Side.Blue, cancellationToken),
            () => OpenWithPlpgsqlAsync(Side.Blue, cancellationToken),
            () => OpenWithPlpgsqlAsync(Side.Green, cancellationToken),
            () => OpenWithPlpgsqlAsync(Side.Green, cancellationToken),
            () => OpenObserverAsync(Side.Blue, cancellationToken),
            () => OpenObserverAsync(Side.Green, cancellationToken),
        ];

        // All open at once, so each pool really holds two sessions, not one opened twice.
        var opening = opens.Select(open => open()).ToArray();
        try
        {
            await Task.WhenAll(opening);
        }
        finally
        {
            foreach (var open in opening.Where(o => o.IsCompletedSuccessfully))
            {
                await open.Result.DisposeAsync();
            }
        }
    }

    private async Task<NpgsqlConnection> OpenWithPlpgsqlAsync(Side side, CancellationToken cancellationToken)
    {
        var conn = await OpenAsync(side, cancellationToken);
        try
        {
            // Loads the language into this backend (DISCARD ALL, when the pool hands it out again, keeps it).
            await conn.ExecuteAsync("DO $teal_warm$ BEGIN END $teal_warm$", cancellationToken);
            return conn;
        }
        catch
        {
            await conn.DisposeAsync();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var source in new[] { _blue, _green, _greenAdmin, _blueObserver, _greenObserver })
        {
            if (source.IsValueCreated)
            {
                await source.Value.DisposeAsync();
            }
        }

        _ensure.Dispose();
    }

    private static ConnectionInfo Control(LinkSpec spec, Side side)
    {
        var registered = side == Side.Blue ? spec.Blue : spec.Green;
        if (registered.User == ControlRole)
        {
            // The operator made Teal's role (without superuser, with only the privileges the
            // prerequisites name) and registered the side with it: log in as given. Teal could
            // not create or re-key the role itself without a superuser.
            return registered;
        }

        var password = (side == Side.Blue ? spec.BlueControlPassword : spec.GreenControlPassword)
            ?? throw new InvalidOperationException($"the link spec has no control password for {Role(side)}");
        return registered with { User = ControlRole, Password = password };
    }

    /// <summary>
    /// Opens a control session; when the role is missing or its password is not the one Teal
    /// holds (a new server, a lost secrets file), creates or re-keys it as the registered user
    /// and tries once more.
    /// </summary>
    private async Task<NpgsqlConnection> OpenControlAsync(NpgsqlDataSource source, Side side, ConnectionInfo connection, CancellationToken cancellationToken)
    {
        try
        {
            return await source.OpenConnectionAsync(cancellationToken);
        }
        catch (PostgresException ex) when (ex.SqlState is PostgresErrorCodes.InvalidPassword or PostgresErrorCodes.InvalidAuthorizationSpecification)
        {
            await EnsureControlRoleAsync(side, cancellationToken);
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException)
        {
            throw PostgresConnections.Classify(ex, connection, Role(side));
        }

        return await PostgresConnections.OpenAsync(source, connection, Role(side), cancellationToken);
    }

    private async Task EnsureControlRoleAsync(Side side, CancellationToken cancellationToken)
    {
        await _ensure.WaitAsync(cancellationToken);
        try
        {
            // Green's deployment database may not exist yet; blue's must.
            var registered = side == Side.Blue ? Registered(side) : Registered(side).WithDatabase(MaintenanceDatabase);
            await using var source = PostgresConnections.DataSource(registered, pooling: false);
            NpgsqlConnection conn;
            try
            {
                conn = await PostgresConnections.OpenAsync(source, registered, Role(side), cancellationToken);
            }
            catch (TealException ex) when (ex.Code is "connection.authentication-failed" or "connection.refused")
            {
                throw new TealException(
                    "fence.control-role-unavailable",
                    $"{Role(side)}: Teal's login role {ControlRole} cannot log in, and {Role(side)}'s registered user cannot log in to set it up ({ex.Message})",
                    $"if {Role(side)} is fenced and Teal's secrets file was lost, log in as a superuser and run ALTER ROLE … LOGIN for the roles that need it (members of teal_fence_logins); check pg_hba.conf allows {ControlRole}",
                    ex);
            }

            await using (conn)
            {
                var super = await conn.ScalarAsync<bool>("SELECT rolsuper FROM pg_roles WHERE rolname = current_user", cancellationToken);
                if (!super)
                {
                    throw new TealException(
                        "fence.control-role-needs-superuser",
                        $"{Role(side)}'s user {registered.User} is not a superuser, so Teal cannot create its own login role {ControlRole} there",
                        $"register {Role(side)} with a superuser, or on {Role(side)}: ALTER ROLE {Sql.Ident(registered.User)} SUPERUSER");
                }

                // The statement holds the password: keep it out of the server log, whatever
                // log_statement says and also when it fails (log_min_error_statement).
                await conn.ExecuteAsync("SET log_statement = 'none'; SET log_min_error_statement = 'panic'", cancellationToken);
                var exists = await conn.ScalarAsync<bool>("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", cancellationToken, ControlRole);
                if (!exists)
                {
                    try
                    {
                        await conn.ExecuteAsync($"CREATE ROLE {ControlRole}", cancellationToken);
                    }
                    catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.DuplicateObject || ex.SqlState == PostgresErrorCodes.UniqueViolation)
                    {
                        // Another link on the same server created it at the same moment.
                    }
                }

                // SUPERUSER because Teal takes LOGIN from superusers and terminates their
                // sessions; REPLICATION for the subscription's walsender on blue.
                var password = Connection(side).Password!;
                await conn.ExecuteAsync($"ALTER ROLE {ControlRole} LOGIN SUPERUSER REPLICATION PASSWORD {Sql.Literal(password)}", cancellationToken);
            }
        }
        finally
        {
            _ensure.Release();
        }
    }

    private static NpgsqlDataSource Observer(ConnectionInfo connection)
    {
        var builder = PostgresConnections.Builder(connection);
        // No default_transaction_read_only override: this session must see the fence.
        builder.Options = "-c statement_timeout=0";
        builder.MaxPoolSize = 2;
        return new NpgsqlDataSourceBuilder(builder.ConnectionString).Build();
    }
}
