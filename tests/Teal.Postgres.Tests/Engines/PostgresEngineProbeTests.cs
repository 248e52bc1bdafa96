using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Postgres.Engines;
using Teal.Postgres.Instances;
using Teal.Testing;

namespace Teal.Postgres.Tests.Engines;

public sealed class PostgresEngineProbeTests(Postgres15Fixture pg) : IClassFixture<Postgres15Fixture>
{
    private static readonly PostgresEngine Engine = new(new PostgresEngineCatalog(PostgresEngineOptions.FromEnvironment()), TimeProvider.System);

    private ConnectionInfo Connection(string? password = null) =>
        new(pg.Server.Host, pg.Server.Port, pg.Server.User, password ?? pg.Server.Password, "postgres");

    [Fact]
    public async Task ProbeAsync_ReachableServer_ReadsVersionAndSuperuser()
    {
        var probe = await Engine.ProbeAsync(Connection(), CancellationToken.None);
        probe.Version.ShouldStartWith("15.");
        probe.IsSuperuser.ShouldBeTrue();
        probe.InRecovery.ShouldBeFalse();
    }

    [Fact]
    public async Task ProbeAsync_WrongPassword_SaysAuthenticationFailedWithoutThePassword()
    {
        const string wrong = "not-the-password-4711";
        var ex = await Should.ThrowAsync<TealException>(() => Engine.ProbeAsync(Connection(wrong), CancellationToken.None));
        ex.Code.ShouldBe("connection.authentication-failed");
        ex.Message.ShouldNotContain(wrong);
        ex.Message.ShouldNotContain(pg.Server.Password);
        ex.Hint!.ShouldContain("password");
    }

    [Fact]
    public async Task ProbeAsync_NothingListening_SaysUnreachable()
    {
        var ex = await Should.ThrowAsync<TealException>(() =>
            Engine.ProbeAsync(new ConnectionInfo("127.0.0.1", ManagedPostgres.FreePort(), "postgres", "x", "postgres"), CancellationToken.None));
        ex.Code.ShouldBe("connection.unreachable");
        ex.Kind.ShouldBe(TealErrorKind.Unavailable);
    }

    [Fact]
    public async Task ProbeAsync_MissingDatabase_NamesIt()
    {
        var ex = await Should.ThrowAsync<TealException>(() => Engine.ProbeAsync(Connection() with { Database = "nope" }, CancellationToken.None));
        ex.Code.ShouldBe("connection.database-not-found");
        ex.Message.ShouldContain("\"nope\"");
    }
}
