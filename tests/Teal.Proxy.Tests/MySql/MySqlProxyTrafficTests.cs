using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using MySqlConnector;
using Teal.Core.Endpoints;
using Teal.Proxy.Endpoints;
using Teal.Proxy.Tests.Endpoints;
using Teal.Testing;
using static Teal.Proxy.Tests.MySql.MySqlProxyServersFixture;

namespace Teal.Proxy.Tests.MySql;

/// <summary>
/// MySQL-protocol traffic through Teal's proxy against real MariaDB servers. Most tests end with
/// a drain of a connection left open and idle: it must close at once, between transactions —
/// which it does only if the proxy followed every response to its end.
/// </summary>
[Collection(MySqlProxyServersGroup.Name)]
public sealed class MySqlProxyTrafficTests(MySqlProxyServersFixture servers)
{
    [Fact]
    public async Task LargeResultSets_TextAndBinaryProtocol_SameAsDirect_ThenIdleForTheDrain()
    {
        await servers.Blue.ExecuteAsync(
            """
            DROP TABLE IF EXISTS app.big;
            CREATE TABLE app.big (id INT PRIMARY KEY, name VARCHAR(100), note TEXT, body LONGBLOB, at DATETIME(6), price DECIMAL(12,3));
            INSERT INTO app.big SELECT seq, CONCAT('name-', seq, ' ü€'), IF(seq % 7 = 0, NULL, REPEAT(CHAR(97 + seq % 26), seq % 300)),
              UNHEX(MD5(seq)), TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq SECOND, seq / 7 FROM app.seq_1_to_200000;
            INSERT INTO app.big (id, name, body) VALUES (0, 'huge', REPEAT(CONCAT(MD5(1), CHAR(0), CHAR(254), CHAR(255)), 600000));
            """);
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        await using var proxied = await OpenThroughAsync(endpoint);
        await using var direct = await servers.Blue.OpenAsync("app", AppUser, AppPassword);

        // The 21 MB value first in its row: the row starts with 0xFE (an 8-byte length) and spans two packets.
        const string query = "SELECT body, id, name, note, at, price FROM big ORDER BY id";
        var text = await HashAsync(proxied, query, prepare: false);
        text.ShouldBe(await HashAsync(direct, query, prepare: false));
        var binary = await HashAsync(proxied, query, prepare: true);
        binary.ShouldBe(await HashAsync(direct, query, prepare: true));
        endpoint.Stats.BytesToClients.ShouldBeGreaterThan(2 * 21_000_000L);

        var drained = await endpoint.DrainAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
        drained.ShouldBe(new EndpointDrainResult(1, 0));
    }

    [Fact]
    public async Task MariaDbClient_BatchOutput_ByteIdenticalToDirect()
    {
        await servers.Blue.ExecuteAsync(
            """
            DROP TABLE IF EXISTS app.cli_rows;
            CREATE TABLE app.cli_rows AS SELECT seq AS id, MD5(seq) AS hash, REPEAT('x', seq % 500) AS pad FROM app.seq_1_to_100000;
            """);
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        var sql = "SELECT * FROM cli_rows ORDER BY id; SELECT @@in_transaction, DATABASE()";

        var viaProxy = await MariaDbCliAsync(endpoint.LocalEndPoint.Port, sql);
        var direct = await MariaDbCliAsync(servers.Blue.Port, sql);

        viaProxy.Length.ShouldBeGreaterThan(100_000 * 40);
        viaProxy.SequenceEqual(direct).ShouldBeTrue("the mariadb client's output through the proxy must equal the direct one");
        endpoint.Stats.Errors.ShouldBe(0);
    }

    [Fact]
    public async Task EveryCommandShape_AnsweredInFull_ConnectionIdleForTheDrain()
    {
        await servers.Blue.ExecuteAsync(
            """
            DROP TABLE IF EXISTS app.shapes;
            CREATE TABLE app.shapes (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20));
            DROP PROCEDURE IF EXISTS app.two_results;
            CREATE PROCEDURE app.two_results() BEGIN SELECT 1 AS a; SELECT 'two' AS b, 2 AS c; END;
            """);
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        await using var connection = await OpenThroughAsync(endpoint);

        // Multi-statement text query, with an error in a later statement.
        await using (var multi = new MySqlCommand("INSERT INTO shapes (v) VALUES ('a'); SELECT COUNT(*) FROM shapes; UPDATE shapes SET v = 'b'", connection))
        {
            (await multi.ExecuteNonQueryAsync()).ShouldBeGreaterThan(0);
        }

        await Should.ThrowAsync<MySqlException>(ExecuteAsync(connection, "SELECT 1; SELECT * FROM no_such_table"));

        // A procedure: two result sets and the CALL's own OK, chained by "more results".
        await using (var call = new MySqlCommand("CALL two_results()", connection))
        await using (var reader = await call.ExecuteReaderAsync())
        {
            (await reader.ReadAsync()).ShouldBeTrue();
            reader.GetInt32(0).ShouldBe(1);
            (await reader.NextResultAsync()).ShouldBeTrue();
            (await reader.ReadAsync()).ShouldBeTrue();
            reader.GetString(0).ShouldBe("two");
        }

        // Server-side prepared statements: prepare (parameter and column definitions), execute, close.
        await using (var prepared = new MySqlCommand("SELECT id, v FROM shapes WHERE id > @id", connection))
        {
            prepared.Parameters.AddWithValue("@id", 0);
            await prepared.PrepareAsync();
            for (var i = 0; i < 3; i++)
            {
                await using var reader = await prepared.ExecuteReaderAsync();
                (await reader.ReadAsync()).ShouldBeTrue();
            }
        }

        await using (var insert = new MySqlCommand("INSERT INTO shapes (v) VALUES (@v)", connection))
        {
            insert.Parameters.AddWithValue("@v", "p");
            await insert.PrepareAsync();
            (await insert.ExecuteNonQueryAsync()).ShouldBe(1);
        }

        // LOAD DATA LOCAL INFILE: the server asks for the file, the client streams it.
        var file = Path.Combine(Path.GetTempPath(), $"teal-proxy-{Guid.NewGuid():N}.tsv");
        await File.WriteAllLinesAsync(file, Enumerable.Range(0, 1000).Select(i => $"\\N\tfile-{i}"));
        try
        {
            var loader = new MySqlBulkLoader(connection) { FileName = file, TableName = "shapes", Local = true, FieldTerminator = "\t", LineTerminator = "\n" };
            (await loader.LoadAsync()).ShouldBe(1000);
        }
        finally
        {
            File.Delete(file);
        }

        // Statements the server answers with a single packet; then a transaction opened and ended.
        await connection.PingAsync();
        await connection.ChangeDatabaseAsync("mysql");
        await connection.ChangeDatabaseAsync("app");
        await connection.ResetConnectionAsync();
        await using (var transaction = await connection.BeginTransactionAsync())
        {
            await ExecuteAsync(connection, "INSERT INTO shapes (v) VALUES ('t')");
            await transaction.CommitAsync();
        }

        (await ScalarAsync<long>(connection, "SELECT COUNT(*) FROM shapes")).ShouldBe(1003);
        var drained = await endpoint.DrainAsync(TimeSpan.FromSeconds(20), CancellationToken.None);
        drained.ShouldBe(new EndpointDrainResult(1, 0));
        (await ProxyServersFixture.EventuallyAsync(() => endpoint.Stats.Active == 0)).ShouldBeTrue();
    }

    [Fact]
    public async Task ThreeHundredConcurrentConnections_EachRunsAQuery_AllReleased()
    {
        const int clients = 300;
        var log = new ListLogger();
        await using var endpoint = StartEndpoint(servers.BlueTarget, logger: log);
        var allOpen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var counted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var opened = 0;
        var connections = Enumerable.Range(0, clients).Select(async i =>
        {
            await using var connection = await OpenThroughAsync(endpoint, timeoutSeconds: 60);
            if (Interlocked.Increment(ref opened) == clients)
            {
                allOpen.SetResult();
            }

            // Every session stays open until all are, so the proxy really holds them all at once.
            // And until the endpoint's count is read: a client let go at allOpen ran its query
            // and closed before it (read 297 of 300 and 499 of 500, the rest ended "client closed").
            await counted.Task.WaitAsync(TimeSpan.FromSeconds(120));
            return await ScalarAsync<long>(connection, $"SELECT CONNECTION_ID() + 0 * {i}");
        }).ToList();

        await allOpen.Task.WaitAsync(TimeSpan.FromSeconds(120));
        var stats = endpoint.Stats;
        var ended = log.Lines.Where(l => l.Contains(" ended: ", StringComparison.Ordinal)).ToList();
        counted.SetResult();
        stats.Active.ShouldBe(clients, $"{stats}; ended: {string.Join(" | ", ended)}");
        var ids = await Task.WhenAll(connections);

        ids.Distinct().Count().ShouldBe(clients);
        (await ProxyServersFixture.EventuallyAsync(() => endpoint.Stats.Active == 0)).ShouldBeTrue($"active connections left: {endpoint.Stats.Active}");
        endpoint.Stats.Errors.ShouldBe(0);
    }

    [Fact]
    public async Task ClientAskingForTls_RefusedWithAClearError_PreferredFallsBackToPlaintext()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, name: "orders");

        var error = await Should.ThrowAsync<MySqlException>(async () =>
        {
            await using var connection = new MySqlConnection(Through(endpoint, ssl: MySqlSslMode.Required));
            await connection.OpenAsync();
        });
        error.Message.ShouldContain("SSL", Case.Insensitive);

        await using var plain = await OpenThroughAsync(endpoint);
        (await ScalarAsync<string>(plain, "SELECT CONCAT('[', VARIABLE_VALUE, ']') FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'")).ShouldBe("[]");
    }

    [Fact]
    public async Task ConnectionCap_ClientOverItGetsTooManyConnections_AndASlotFreedIsReusable()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget, name: "orders", options: new ProxyOptions { MaxConnections = 2 });
        await using var first = await OpenThroughAsync(endpoint);
        var second = await OpenThroughAsync(endpoint);

        var error = await Should.ThrowAsync<MySqlException>(OpenThroughAsync(endpoint));

        error.ErrorCode.ShouldBe(MySqlErrorCode.ConnectionCountError, error.Message);
        error.Message.ShouldContain("Teal endpoint orders has reached its limit of 2 connections");
        endpoint.Stats.Errors.ShouldBe(1);
        await second.DisposeAsync();
        (await ProxyServersFixture.EventuallyAsync(() => endpoint.Stats.Active == 1)).ShouldBeTrue();
        await using var third = await OpenThroughAsync(endpoint);
        (await ScalarAsync<int>(third, "SELECT 1")).ShouldBe(1);
        (await ScalarAsync<int>(first, "SELECT 2")).ShouldBe(2);
    }

    [Fact]
    public async Task UnreachableTarget_ClientGetsAnErrorNamingTheInstance_AndErrorIsCounted()
    {
        await using var endpoint = StartEndpoint(servers.GreenTarget with { Port = 1 });

        var error = await Should.ThrowAsync<MySqlException>(OpenThroughAsync(endpoint));

        error.Message.ShouldContain("could not reach instance green");
        endpoint.Stats.Errors.ShouldBe(1);
        (await ProxyServersFixture.EventuallyAsync(() => endpoint.Stats.Active == 0)).ShouldBeTrue();
    }

    private static async Task<string> HashAsync(MySqlConnection connection, string sql, bool prepare)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        await using var command = new MySqlCommand(sql, connection);
        if (prepare)
        {
            await command.PrepareAsync();
        }

        await using var reader = await command.ExecuteReaderAsync();
        var rows = 0;
        while (await reader.ReadAsync())
        {
            rows++;
            for (var i = 0; i < reader.FieldCount; i++)
            {
                var value = reader.GetValue(i);
                hash.AppendData(value is byte[] bytes ? bytes : Encoding.UTF8.GetBytes(Convert.ToString(value, CultureInfo.InvariantCulture) ?? "NULL"));
                hash.AppendData([0x1F]);
            }
        }

        rows.ShouldBe(200_001);
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    private static async Task<byte[]> MariaDbCliAsync(int port, string sql)
    {
        var start = new ProcessStartInfo("mariadb")
        {
            ArgumentList = { "--no-defaults", "--batch", "--raw", "-h", "127.0.0.1", "-P", port.ToString(CultureInfo.InvariantCulture), "-u", AppUser, "-D", "app", "-e", sql },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.Environment["MYSQL_PWD"] = AppPassword;
        using var process = Process.Start(start)!; // Start returns null only for shell-executed documents.
        using var output = new MemoryStream();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.StandardOutput.BaseStream.CopyToAsync(output);
        await process.WaitForExitAsync();
        process.ExitCode.ShouldBe(0, await stderr);
        return output.ToArray();
    }
}
