using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Postgres.Instances;
using Teal.Postgres.PgBouncer;
using Teal.Testing;

namespace Teal.Postgres.Tests.PgBouncer;

/// <summary>What the operator hears when adding a PgBouncer endpoint that Teal could not drive.</summary>
public sealed class PgBouncerEndpointValidateTests(Postgres15Fixture postgres) : IClassFixture<Postgres15Fixture>
{
    [Fact]
    public async Task Validate_WorkingPgBouncer_ReportsVersionEntryAndHeldClientTimeout()
    {
        await using var bouncer = await PgBouncerServer.StartAsync(postgres.Server, new PgBouncerServerOptions { QueryWaitTimeoutSeconds = 45 });
        await using var endpoint = Endpoint(bouncer, bouncer.Spec, bouncer.AdminPassword, new ListLogger());

        var validation = await endpoint.ValidateAsync(CancellationToken.None);

        validation.Version.ShouldStartWith("PgBouncer 1.");
        validation.Live.Port.ShouldBe(postgres.Server.Port);
        validation.Live.Database.ShouldBe("postgres");
        validation.HeldClientTimeout.ShouldBe(TimeSpan.FromSeconds(45));
    }

    [Fact]
    public async Task Validate_WrongAdminPassword_RefusesWithoutShowingOrLoggingIt()
    {
        const string wrong = "Wrong-Password-31337";
        await using var bouncer = await PgBouncerServer.StartAsync(postgres.Server);
        var logger = new ListLogger();
        await using var endpoint = Endpoint(bouncer, bouncer.Spec, wrong, logger);

        var error = await Should.ThrowAsync<TealException>(() => endpoint.ValidateAsync(CancellationToken.None));

        error.Code.ShouldBe("endpoint.pgbouncer-auth-failed");
        error.Hint.ShouldNotBeNullOrEmpty();
        error.ToString().ShouldNotContain(wrong);
        error.ToString().ShouldNotContain(bouncer.AdminPassword);
        logger.Lines.ShouldAllBe(line => !line.Contains(wrong) && !line.Contains(bouncer.AdminPassword));
    }

    [Fact]
    public async Task Validate_UserOnlyInStatsUsers_IsNotAdmin()
    {
        await using var bouncer = await PgBouncerServer.StartAsync(postgres.Server);
        await using var endpoint = Endpoint(bouncer, bouncer.Spec with { AdminUser = PgBouncerServer.StatsUser }, bouncer.AdminPassword, new ListLogger());

        var error = await Should.ThrowAsync<TealException>(() => endpoint.ValidateAsync(CancellationToken.None));

        error.Code.ShouldBe("endpoint.pgbouncer-not-admin");
        error.Hint!.ShouldContain("admin_users");
    }

    [Fact]
    public async Task Validate_DatabaseEntryNotInConfigFile_NamesTheEntry()
    {
        await using var bouncer = await PgBouncerServer.StartAsync(postgres.Server);
        await using var endpoint = Endpoint(bouncer, bouncer.Spec with { Database = "no_such_entry" }, bouncer.AdminPassword, new ListLogger());

        var error = await Should.ThrowAsync<TealException>(() => endpoint.ValidateAsync(CancellationToken.None));

        error.Code.ShouldBe("endpoint.pgbouncer-entry-missing");
        error.Message.ShouldContain("no_such_entry");
    }

    [Fact]
    public async Task Validate_EntryInFileButNotLoaded_AsksForReload()
    {
        await using var bouncer = await PgBouncerServer.StartAsync(postgres.Server);
        var ini = await File.ReadAllTextAsync(bouncer.ConfigFile);
        await File.WriteAllTextAsync(bouncer.ConfigFile, ini.Replace("[databases]\n", "[databases]\nlater = host=127.0.0.1 port=1 dbname=x\n", StringComparison.Ordinal));
        await using var endpoint = Endpoint(bouncer, bouncer.Spec with { Database = "later" }, bouncer.AdminPassword, new ListLogger());

        var error = await Should.ThrowAsync<TealException>(() => endpoint.ValidateAsync(CancellationToken.None));

        error.Code.ShouldBe("endpoint.pgbouncer-database-unknown");
        error.Hint!.ShouldContain(bouncer.ConfigFile);
    }

    [Fact]
    public async Task Validate_FileEditedButNotReloaded_ReportsTheMismatch()
    {
        await using var bouncer = await PgBouncerServer.StartAsync(postgres.Server);
        var ini = await File.ReadAllTextAsync(bouncer.ConfigFile);
        await File.WriteAllTextAsync(bouncer.ConfigFile, ini.Replace($"port={postgres.Server.Port} dbname=postgres\n;", "port=1 dbname=postgres\n;", StringComparison.Ordinal));
        await using var endpoint = Endpoint(bouncer, bouncer.Spec, bouncer.AdminPassword, new ListLogger());

        var error = await Should.ThrowAsync<TealException>(() => endpoint.ValidateAsync(CancellationToken.None));

        error.Code.ShouldBe("endpoint.pgbouncer-config-mismatch");
    }

    [Fact]
    public async Task Validate_ConfigFileMissing_SaysWhichFile()
    {
        await using var bouncer = await PgBouncerServer.StartAsync(postgres.Server);
        var missing = Path.Combine(bouncer.Directory, "elsewhere.ini");
        await using var endpoint = Endpoint(bouncer, bouncer.Spec with { ConfigFile = missing }, bouncer.AdminPassword, new ListLogger());

        var error = await Should.ThrowAsync<TealException>(() => endpoint.ValidateAsync(CancellationToken.None));

        error.Code.ShouldBe("endpoint.pgbouncer-config-unreadable");
        error.Message.ShouldContain(missing);
    }

    [Fact]
    public async Task Validate_NothingListening_IsUnavailable()
    {
        var spec = new PgBouncerSpec("127.0.0.1", ManagedPostgres.FreePort(), PgBouncerServer.AdminUser, PgBouncerServer.Database, "/nonexistent/pgbouncer.ini");
        await using var endpoint = new PgBouncerEndpoint("app", spec, new EndpointTarget("blue", "127.0.0.1", 5432, "postgres"), "secret-pw-1", new ListLogger());

        var error = await Should.ThrowAsync<TealException>(() => endpoint.ValidateAsync(CancellationToken.None));

        error.Code.ShouldBe("endpoint.pgbouncer-unreachable");
        error.Kind.ShouldBe(TealErrorKind.Unavailable);
        error.Message.ShouldContain(spec.AdminPort.ToString(System.Globalization.CultureInfo.InvariantCulture));
        error.ToString().ShouldNotContain("secret-pw-1");
    }

    private PgBouncerEndpoint Endpoint(PgBouncerServer bouncer, PgBouncerSpec spec, string password, ListLogger logger) =>
        new("app", spec, new EndpointTarget("blue", postgres.Server.Host, postgres.Server.Port, bouncer.Options.TargetDatabase), password, logger);
}
