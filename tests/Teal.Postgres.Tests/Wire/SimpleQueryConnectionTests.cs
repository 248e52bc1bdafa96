using System.Diagnostics;
using System.Net.Sockets;
using Teal.Postgres.Instances;
using Teal.Postgres.Wire;
using Teal.Testing;

namespace Teal.Postgres.Tests.Wire;

/// <summary>The minimal wire client against a real PostgreSQL 15 and real PgBouncers (SCRAM and md5).</summary>
public sealed class SimpleQueryConnectionTests(Postgres15Fixture postgres) : IClassFixture<Postgres15Fixture>
{
    private WireConnectOptions Direct(string? password = null) =>
        new(postgres.Server.Host, postgres.Server.Port, postgres.Server.User, "postgres") { Password = password ?? postgres.Server.Password };

    [Fact]
    public async Task Open_ScramAgainstPostgres_ReadsParametersRowsAndNulls()
    {
        await using var connection = await SimpleQueryConnection.OpenAsync(Direct(), CancellationToken.None);

        connection.ServerParameters["server_version"].ShouldStartWith("15.");
        var result = await connection.QueryAsync("SELECT 1 AS one, NULL::text AS nothing, 'grün' AS word", CancellationToken.None);

        result.CommandTag.ShouldBe("SELECT 1");
        result.Columns.ShouldBe(["one", "nothing", "word"]);
        result.Rows.Single().ShouldBe(["1", null, "grün"]);
        result.NamedRows().Single()["word"].ShouldBe("grün");
    }

    [Fact]
    public async Task Execute_SeveralStatements_ReturnsOneResultEach()
    {
        await using var connection = await SimpleQueryConnection.OpenAsync(Direct(), CancellationToken.None);

        var results = await connection.ExecuteAsync("SELECT g FROM generate_series(1, 3) g; CREATE TEMP TABLE t (x int); ; SELECT 2", CancellationToken.None);

        results.Select(r => r.CommandTag).ShouldBe(["SELECT 3", "CREATE TABLE", "SELECT 1"]);
        results[0].Rows.Select(r => r[0]).ShouldBe(["1", "2", "3"]);
    }

    [Fact]
    public async Task Query_ServerError_ThrowsWithSqlStateAndConnectionStaysUsable()
    {
        await using var connection = await SimpleQueryConnection.OpenAsync(Direct(), CancellationToken.None);

        var error = await Should.ThrowAsync<PostgresWireException>(() => connection.QueryAsync("SELECT 1/0", CancellationToken.None));

        error.SqlState.ShouldBe("22012");
        connection.IsBroken.ShouldBeFalse();
        (await connection.QueryAsync("SELECT 42", CancellationToken.None)).Rows.Single()[0].ShouldBe("42");
    }

    [Fact]
    public async Task Open_WrongPassword_FailsAuthenticationWithoutShowingThePassword()
    {
        const string wrong = "not-the-password-4711";

        var error = await Should.ThrowAsync<PostgresWireException>(() => SimpleQueryConnection.OpenAsync(Direct(wrong), CancellationToken.None));

        error.IsAuthenticationFailure.ShouldBeTrue();
        error.ToString().ShouldNotContain(wrong);
        Direct(wrong).ToString().ShouldNotContain(wrong);
    }

    [Fact]
    public async Task Query_Cancelled_ThrowsPromptlyAndBreaksTheConnection()
    {
        await using var connection = await SimpleQueryConnection.OpenAsync(Direct(), CancellationToken.None);
        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        var watch = Stopwatch.StartNew();

        await Should.ThrowAsync<OperationCanceledException>(() => connection.QueryAsync("SELECT pg_sleep(30)", cancel.Token));

        watch.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(5));
        connection.IsBroken.ShouldBeTrue();
    }

    [Fact]
    public async Task Open_NobodyListening_ThrowsSocketException()
    {
        var options = new WireConnectOptions("127.0.0.1", ManagedPostgres.FreePort(), "nobody", "postgres") { Password = "x" };

        await Should.ThrowAsync<SocketException>(() => SimpleQueryConnection.OpenAsync(options, CancellationToken.None));
    }

    [Theory]
    [InlineData("scram-sha-256")]
    [InlineData("md5")]
    public async Task Open_PgBouncerAdminConsole_AnswersShowCommands(string authType)
    {
        await using var bouncer = await PgBouncerServer.StartAsync(postgres.Server, new PgBouncerServerOptions { AuthType = authType });
        var options = new WireConnectOptions(bouncer.Host, bouncer.Port, PgBouncerServer.AdminUser, "pgbouncer") { Password = bouncer.AdminPassword };
        await using var console = await SimpleQueryConnection.OpenAsync(options, CancellationToken.None);

        var databases = await console.QueryAsync("SHOW DATABASES", CancellationToken.None);

        databases.NamedRows().Select(r => r["name"]).ShouldContain(PgBouncerServer.Database);
        var entry = databases.NamedRows().Single(r => r["name"] == PgBouncerServer.Database);
        entry.Number("port").ShouldBe(postgres.Server.Port);
        (await console.QueryAsync("SHOW VERSION", CancellationToken.None)).Rows.Single()[0].ShouldStartWith("PgBouncer");
    }

    [Fact]
    public async Task Open_PgBouncerWrongPassword_FailsAuthentication()
    {
        await using var bouncer = await PgBouncerServer.StartAsync(postgres.Server);
        var options = new WireConnectOptions(bouncer.Host, bouncer.Port, PgBouncerServer.AdminUser, "pgbouncer") { Password = "wrong-0815" };

        var error = await Should.ThrowAsync<PostgresWireException>(() => SimpleQueryConnection.OpenAsync(options, CancellationToken.None));

        error.IsAuthenticationFailure.ShouldBeTrue($"{error.SqlState} {error.Message}");
        error.ToString().ShouldNotContain("wrong-0815");
    }
}
