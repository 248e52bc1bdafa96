using System.Globalization;
using MySqlConnector;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Core.Instances;
using Teal.MySql.Connections;
using Teal.MySql.Engines;
using Teal.MySql.Replication;
using Teal.Testing;

namespace Teal.MySql.Tests.Engines;

public sealed class MariaDbEngineTests
{
    private static MariaDbEngine Engine() => new(TestDirectories.MariaDbCatalog, TimeProvider.System);

    [Fact]
    public async Task ListAsync_FindsDebiansMariaDb1011()
    {
        var engines = await TestDirectories.MariaDbCatalog.ListAsync(CancellationToken.None);

        engines.ShouldContain(e => e.Engine == EngineKind.MariaDb && e.Version.StartsWith("10.11.", StringComparison.Ordinal) && e.Source == "debian");
    }

    [Fact]
    public async Task ProbeAsync_ManagedServer_ReportsVersionSuperAndNotAReplica()
    {
        await using var server = await MariaDbServer.StartAsync();

        var probe = await Engine().ProbeAsync(server.Connection(), CancellationToken.None);

        probe.Version.ShouldStartWith("10.11.");
        probe.IsSuperuser.ShouldBeTrue();
        probe.InRecovery.ShouldBeFalse();
    }

    [Fact]
    public async Task ProbeAsync_PlainAccount_IsNotSuper_AndWrongPasswordIsRefusedWithoutEchoingIt()
    {
        await using var server = await MariaDbServer.StartAsync();
        await server.ExecuteAsync("CREATE USER app@'%' IDENTIFIED BY 'app-pw'; GRANT SELECT ON *.* TO app@'%'");

        var probe = await Engine().ProbeAsync(server.Connection() with { User = "app", Password = "app-pw" }, CancellationToken.None);
        var ex = await Should.ThrowAsync<TealException>(() => Engine().ProbeAsync(server.Connection() with { User = "app", Password = "wrong-secret" }, CancellationToken.None));

        probe.IsSuperuser.ShouldBeFalse();
        ex.Code.ShouldBe("connection.authentication-failed");
        ex.Message.ShouldNotContain("wrong-secret");
    }

    [Fact]
    public void ServerFlavor_TellsMariaDbFromMySql()
    {
        ServerFlavor.FromVersion("10.11.19-MariaDB-0+deb12u1-log").IsMariaDb.ShouldBeTrue();
        ServerFlavor.Number("10.11.19-MariaDB-0+deb12u1-log").ShouldBe("10.11.19");
        ServerFlavor.FromVersion("8.0.36").Unsupported!.ShouldContain("super_read_only");
    }

    [Fact]
    public async Task OpenTransactionsQuery_RunsOnAServer_AndListsAnOpenTransaction()
    {
        await using var server = await MariaDbServer.StartAsync();
        await server.ExecuteAsync("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB");
        await using var open = await server.OpenAsync("app");
        await using var transaction = await open.BeginTransactionAsync();
        await using (var insert = new MySqlCommand("INSERT INTO t VALUES (1)", open, transaction))
        {
            await insert.ExecuteNonQueryAsync();
        }

        await using var conn = await server.OpenAsync();
        var rows = await Sql.RowsAsync(conn, MySqlReplicationLink.OpenTransactions, CancellationToken.None);

        rows.ShouldContain(r => r["trx_mysql_thread_id"] == open.ServerThread.ToString(CultureInfo.InvariantCulture));
    }
}
