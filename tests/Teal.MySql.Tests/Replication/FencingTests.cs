using MySqlConnector;
using Teal.Core.Engines;
using Teal.Testing;

namespace Teal.MySql.Tests.Replication;

/// <summary>
/// The fence holds for every account, SUPER included — MariaDB 10.11's read_only alone does not
/// stop SUPER (it implies READ ONLY ADMIN) — for sessions connected before the fence and after.
/// </summary>
public sealed class FencingTests : IAsyncLifetime
{
    private const int ReadOnlyError = 1290;
    private MariaDbServer _blue = null!;
    private MariaDbServer _green = null!;

    public async Task InitializeAsync()
    {
        var servers = await Task.WhenAll(MariaDbServer.StartAsync(), MariaDbServer.StartAsync());
        (_blue, _green) = (servers[0], servers[1]);
        await _blue.ExecuteAsync(
            """
            CREATE DATABASE app;
            CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB;
            CREATE USER admin@'%' IDENTIFIED BY 'admin-pw'; GRANT ALL PRIVILEGES ON *.* TO admin@'%';
            CREATE USER roadmin@'%' IDENTIFIED BY 'ro-pw'; GRANT INSERT, SELECT, READ ONLY ADMIN ON *.* TO roadmin@'%';
            CREATE ROLE superrole; GRANT SUPER, INSERT ON *.* TO superrole;
            CREATE USER viarole@'%' IDENTIFIED BY 'role-pw'; GRANT superrole TO viarole@'%'; SET DEFAULT ROLE superrole FOR viarole@'%';
            CREATE USER app@'%' IDENTIFIED BY 'app-pw'; GRANT SELECT, INSERT ON app.* TO app@'%';
            CREATE USER already@'%' IDENTIFIED BY 'al-pw' ACCOUNT LOCK; GRANT ALL PRIVILEGES ON *.* TO already@'%';
            """);
    }

    public async Task DisposeAsync()
    {
        await _blue.DisposeAsync();
        await _green.DisposeAsync();
    }

    [Fact]
    public async Task Fence_SuperUserConnectedBefore_CannotWriteAfter_AndNoPrivilegedAccountCanLogIn()
    {
        await using var link = LinkKit.Link(_blue, _green);
        await using var superBefore = await _blue.OpenAsync(user: "admin", password: "admin-pw");
        await using var appBefore = await _blue.OpenAsync(user: "app", password: "app-pw");
        (await LinkKit.TryAsync(superBefore, "INSERT INTO app.t (v) VALUES (1)")).ShouldBe(0, "SUPER writes before the fence");

        await link.FenceAsync(Side.Blue, CancellationToken.None);

        // The SUPER session opened before the fence is gone; nothing it sends can write.
        (await LinkKit.TryAsync(superBefore, "INSERT INTO app.t (v) VALUES (2)")).ShouldNotBe(0);
        // A plain account is refused by read_only, in an open session and a new one.
        (await LinkKit.TryAsync(appBefore, "INSERT INTO app.t (v) VALUES (3)")).ShouldBe(ReadOnlyError);
        await using (var appAfter = await _blue.OpenAsync(user: "app", password: "app-pw"))
        {
            (await LinkKit.TryAsync(appAfter, "INSERT INTO app.t (v) VALUES (4)")).ShouldBe(ReadOnlyError);
        }

        // Every account that read_only would let through cannot log in any more.
        (await LinkKit.TryOpenAsync(_blue, "admin", "admin-pw")).ShouldBe(4151, "SUPER account locked");
        (await LinkKit.TryOpenAsync(_blue, "roadmin", "ro-pw")).ShouldBe(4151, "READ ONLY ADMIN account locked");
        (await LinkKit.TryOpenAsync(_blue, "viarole", "role-pw")).ShouldBe(4151, "SUPER through a default role locked");
        (await LinkKit.TryOpenAsync(_blue, "app", "app-pw")).ShouldBe(0, "a plain account still logs in to read");

        // Teal's own account writes through its fence (heartbeat, bookkeeping).
        (await LinkKit.TryAsync(await _blue.OpenAsync(), "INSERT INTO app.t (v) VALUES (5)")).ShouldBe(0);
        (await _blue.ScalarAsync<long>("SELECT COUNT(*) FROM app.t WHERE v IN (2, 3, 4)")).ShouldBe(0);
    }

    [Fact]
    public async Task Unfence_PutsBackWhatTheFenceChanged_AndLeavesTheOperatorsLocksAlone()
    {
        await using var link = LinkKit.Link(_blue, _green);
        await link.FenceAsync(Side.Blue, CancellationToken.None);
        await link.FenceAsync(Side.Blue, CancellationToken.None); // repeated: must not record its own state as "before"

        await link.UnfenceAsync(Side.Blue, CancellationToken.None);

        (await _blue.ScalarAsync<long>("SELECT @@global.read_only")).ShouldBe(0);
        await using var admin = await _blue.OpenAsync(user: "admin", password: "admin-pw");
        (await LinkKit.TryAsync(admin, "INSERT INTO app.t (v) VALUES (6)")).ShouldBe(0);
        (await LinkKit.TryOpenAsync(_blue, "already", "al-pw")).ShouldBe(4151, "locked by the operator before the fence: stays locked");
    }

    [Fact]
    public async Task Fence_DoesNotReachGreenThroughTheBinlog()
    {
        await using var link = LinkKit.Link(_blue, _green);
        var before = await _blue.ScalarAsync<string>("SELECT @@global.gtid_binlog_pos");

        await link.FenceAsync(Side.Blue, CancellationToken.None);
        await link.UnfenceAsync(Side.Blue, CancellationToken.None);

        (await _blue.ScalarAsync<string>("SELECT @@global.gtid_binlog_pos")).ShouldBe(before, "account locks and bookkeeping are unlogged");
    }

    [Fact]
    public async Task Drain_OpenTransactionPastTheBudget_IsKilled()
    {
        await using var link = LinkKit.Link(_blue, _green);
        await using var app = await _blue.OpenAsync(user: "app", password: "app-pw");
        await using (var begin = new MySqlCommand("BEGIN; INSERT INTO app.t (v) VALUES (7)", app))
        {
            await begin.ExecuteNonQueryAsync();
        }

        await link.FenceAsync(Side.Blue, CancellationToken.None);
        var result = await link.DrainAsync(Side.Blue, TimeSpan.FromMilliseconds(300), CancellationToken.None);

        result.Terminated.ShouldBe(1);
        (await LinkKit.TryAsync(app, "COMMIT")).ShouldNotBe(0);
        (await _blue.ScalarAsync<long>("SELECT COUNT(*) FROM app.t WHERE v = 7")).ShouldBe(0);
    }
}
