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
    public async Task Fence_SuperLoginHeldAtItsAuthSwitch_CannotFinishAndWriteAfter()
    {
        await using var link = LinkKit.Link(_blue, _green);
        // A SUPER login that has sent its name and stops at the server's auth switch: MariaDB
        // looked the account up before the fence locked it.
        using var login = await StalledLogin.StartAsync(_blue.Host, _blue.Port, "admin");

        await link.FenceAsync(Side.Blue, CancellationToken.None);

        var finished = await login.FinishAsync("admin-pw");
        finished.ShouldNotBe(StalledLogin.Outcome.LoggedIn, "a login under way at the fence must not end in a SUPER session");
        (await login.TryWriteAsync("INSERT INTO app.t (v) VALUES (7)")).ShouldBeFalse();
        (await _blue.ScalarAsync<long>("SELECT COUNT(*) FROM app.t WHERE v = 7")).ShouldBe(0);
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

/// <summary>
/// A MySQL-protocol login by hand, held between the server's auth switch request and the answer
/// (what a slow or misbehaving client does), then finished with <c>mysql_native_password</c>.
/// </summary>
internal sealed class StalledLogin : IDisposable
{
    public enum Outcome { LoggedIn, Refused, Closed }

    private readonly System.Net.Sockets.TcpClient _tcp;
    private readonly System.Net.Sockets.NetworkStream _stream;
    private byte[] _salt = [];
    private bool _loggedIn;

    private StalledLogin(System.Net.Sockets.TcpClient tcp)
    {
        _tcp = tcp;
        _stream = tcp.GetStream();
        _stream.ReadTimeout = 10_000;
    }

    public static async Task<StalledLogin> StartAsync(string host, int port, string user)
    {
        var tcp = new System.Net.Sockets.TcpClient();
        await tcp.ConnectAsync(host, port);
        var login = new StalledLogin(tcp);
        var (_, greeting) = await login.ReadPacketAsync();
        greeting![0].ShouldBe((byte)10, "protocol 10 greeting");
        // HandshakeResponse41 naming a plugin the account does not use, so the server switches.
        const uint capabilities = 0x1 | 0x200 | 0x2000 | 0x8000 | 0x20000 | 0x80000; // long password, 4.1, transactions, secure connection, multi results, plugin auth
        var response = new List<byte>();
        response.AddRange(BitConverter.GetBytes(capabilities));
        response.AddRange(BitConverter.GetBytes(16 * 1024 * 1024));
        response.Add(45); // utf8mb4
        response.AddRange(new byte[23]);
        response.AddRange(System.Text.Encoding.UTF8.GetBytes(user));
        response.Add(0);
        response.Add(0); // no auth data for the plugin named below
        response.AddRange("client_ed25519"u8.ToArray());
        response.Add(0);
        await login.WritePacketAsync(1, response.ToArray());
        var (_, switchRequest) = await login.ReadPacketAsync();
        switchRequest![0].ShouldBe((byte)0xFE, "an auth switch request");
        var plugin = Array.IndexOf(switchRequest, (byte)0, 1);
        System.Text.Encoding.ASCII.GetString(switchRequest, 1, plugin - 1).ShouldBe("mysql_native_password");
        login._salt = switchRequest[(plugin + 1)..].Take(20).ToArray();
        return login;
    }

    /// <summary>Answers the switch with the password's mysql_native_password scramble (SHA-1 is that protocol's, not a choice).</summary>
    [System.Diagnostics.CodeAnalysis.SuppressMessage("Security", "CA5350", Justification = "mysql_native_password is defined with SHA-1")]
    public async Task<Outcome> FinishAsync(string password)
    {
        var sha1 = System.Security.Cryptography.SHA1.HashData(System.Text.Encoding.UTF8.GetBytes(password));
        var sha2 = System.Security.Cryptography.SHA1.HashData(sha1);
        var mask = System.Security.Cryptography.SHA1.HashData(_salt.Concat(sha2).ToArray());
        var scramble = sha1.Select((b, i) => (byte)(b ^ mask[i])).ToArray();
        try
        {
            await WritePacketAsync(3, scramble);
            var (_, answer) = await ReadPacketAsync();
            _loggedIn = answer is [0x00, ..];
            return answer switch { null => Outcome.Closed, [0x00, ..] => Outcome.LoggedIn, _ => Outcome.Refused };
        }
        catch (IOException)
        {
            return Outcome.Closed;
        }
    }

    /// <summary>Whether a statement sent on this connection was answered with OK.</summary>
    public async Task<bool> TryWriteAsync(string sql)
    {
        if (!_loggedIn)
        {
            return false;
        }

        await WritePacketAsync(0, [0x03, .. System.Text.Encoding.UTF8.GetBytes(sql)]);
        var (_, answer) = await ReadPacketAsync();
        return answer is [0x00, ..];
    }

    private async Task WritePacketAsync(byte sequence, byte[] payload)
    {
        var header = new byte[] { (byte)payload.Length, (byte)(payload.Length >> 8), (byte)(payload.Length >> 16), sequence };
        await _stream.WriteAsync(header.Concat(payload).ToArray());
    }

    /// <summary>The next packet, or a null payload once the server has closed the connection.</summary>
    private async Task<(byte Sequence, byte[]? Payload)> ReadPacketAsync()
    {
        var header = new byte[4];
        if (!await ReadExactlyAsync(header))
        {
            return (0, null);
        }

        var payload = new byte[header[0] | (header[1] << 8) | (header[2] << 16)];
        return await ReadExactlyAsync(payload) ? (header[3], payload) : (header[3], null);
    }

    private async Task<bool> ReadExactlyAsync(byte[] buffer)
    {
        try
        {
            await _stream.ReadExactlyAsync(buffer);
            return true;
        }
        catch (EndOfStreamException)
        {
            return false;
        }
    }

    public void Dispose() => _tcp.Dispose();
}
