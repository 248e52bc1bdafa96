using System.Diagnostics;
using System.Globalization;
using System.Text;
using Npgsql;
using Teal.Testing;
using static Teal.Proxy.Tests.Endpoints.ProxyServersFixture;

namespace Teal.Proxy.Tests.Endpoints;

[Collection(ProxyServersGroup.Name)]
public sealed class ProxyTrafficTests(ProxyServersFixture servers)
{
    [Fact]
    public async Task Copy_200kRowsInAndOut_ByteIdenticalToDirect()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        await servers.Blue.ExecuteAsync("drop table if exists copy_rows; create table copy_rows(id int primary key, name text, note text)");
        var input = new StringBuilder();
        for (var i = 0; i < 200_000; i++)
        {
            input.Append(CultureInfo.InvariantCulture, $"{i}\tname-{i}\t{new string((char)('a' + (i % 26)), i % 97)}\n");
        }

        await using (var connection = await OpenThroughAsync(endpoint, servers.Blue))
        {
            await using var writer = await connection.BeginTextImportAsync("copy copy_rows from stdin");
            await writer.WriteAsync(input.ToString());
        }

        string throughProxy;
        await using (var connection = await OpenThroughAsync(endpoint, servers.Blue))
        {
            using var reader = await connection.BeginTextExportAsync("copy (select * from copy_rows order by id) to stdout");
            throughProxy = await reader.ReadToEndAsync();
        }

        string direct;
        await using (var connection = await servers.Blue.OpenAsync())
        {
            using var reader = await connection.BeginTextExportAsync("copy (select * from copy_rows order by id) to stdout");
            direct = await reader.ReadToEndAsync();
        }

        throughProxy.Length.ShouldBe(input.Length);
        (throughProxy == input.ToString()).ShouldBeTrue("COPY TO through the proxy must return exactly what COPY FROM sent");
        (throughProxy == direct).ShouldBeTrue();
        endpoint.Stats.BytesFromClients.ShouldBeGreaterThan(input.Length);
        endpoint.Stats.BytesToClients.ShouldBeGreaterThan(input.Length);
    }

    [Fact]
    public async Task Psql_CopyToStdout_SameBytesAsDirect()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        await servers.Blue.ExecuteAsync("drop table if exists psql_rows; create table psql_rows as select g as id, md5(g::text) as hash from generate_series(1, 50000) g");
        var direct = await PsqlAsync(servers.Blue.Port, @"\copy (select * from psql_rows order by id) to stdout");
        var proxied = await PsqlAsync(endpoint.LocalEndPoint.Port, @"\copy (select * from psql_rows order by id) to stdout");

        direct.Length.ShouldBeGreaterThan(50000 * 30);
        proxied.SequenceEqual(direct).ShouldBeTrue("psql's COPY output through the proxy must equal the direct one");
    }

    [Fact]
    public async Task FiveHundredConcurrentConnections_EachRunsAQuery_AllReleased()
    {
        const int clients = 500;
        var log = new ListLogger();
        await using var endpoint = StartEndpoint(servers.BlueTarget, logger: log);
        var allOpen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var counted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var opened = 0;
        var connections = Enumerable.Range(0, clients).Select(async i =>
        {
            await using var connection = await OpenThroughAsync(endpoint, servers.Blue, timeoutSeconds: 60);
            if (Interlocked.Increment(ref opened) == clients)
            {
                allOpen.SetResult();
            }

            // Every session stays open until all are, so the proxy really holds 500 at once.
            // And until the endpoint's count is read: a client let go at allOpen ran its query
            // and closed before it (read 297 of 300 and 499 of 500, the rest ended "client closed").
            await counted.Task.WaitAsync(TimeSpan.FromSeconds(90));
            return await ScalarAsync<int>(connection, $"select pg_backend_pid() + 0 * {i}");
        }).ToList();

        await allOpen.Task.WaitAsync(TimeSpan.FromSeconds(90));
        var stats = endpoint.Stats;
        var ended = log.Lines.Where(l => l.Contains(" ended: ", StringComparison.Ordinal)).ToList();
        counted.SetResult();
        stats.Active.ShouldBe(clients, $"{stats}; ended: {string.Join(" | ", ended)}");
        var pids = await Task.WhenAll(connections);

        pids.Distinct().Count().ShouldBe(clients);
        (await EventuallyAsync(() => endpoint.Stats.Active == 0)).ShouldBeTrue($"active connections left: {endpoint.Stats.Active}");
        endpoint.Stats.Total.ShouldBeGreaterThanOrEqualTo(clients);
        endpoint.Stats.Errors.ShouldBe(0);
    }

    [Fact]
    public async Task Cancel_ThroughProxy_ReachesTheSessionsInstance()
    {
        await using var endpoint = StartEndpoint(servers.BlueTarget);
        await using var connection = await OpenThroughAsync(endpoint, servers.Blue);
        await using var command = new NpgsqlCommand("select pg_sleep(30)", connection);
        var started = Stopwatch.StartNew();
        var running = command.ExecuteNonQueryAsync();
        await Task.Delay(300);
        command.Cancel();

        var error = await Should.ThrowAsync<Exception>(running);

        // Npgsql surfaces a cancelled command as 57014 or as OperationCanceledException depending
        // on its path; either way the server stopped the sleep early and the session lives on.
        (error is OperationCanceledException || error is PostgresException { SqlState: PostgresErrorCodes.QueryCanceled }).ShouldBeTrue(error.ToString());
        (await ScalarAsync<int>(connection, "select 42")).ShouldBe(42);
        started.Elapsed.ShouldBeLessThan(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task UnreachableTarget_ClientGetsConnectionFailure_AndErrorIsCounted()
    {
        var closedPort = servers.GreenTarget with { Port = 1 };
        await using var endpoint = StartEndpoint(closedPort);

        var error = await Should.ThrowAsync<PostgresException>(OpenThroughAsync(endpoint, servers.Green));

        error.SqlState.ShouldBe(PostgresErrorCodes.ConnectionFailure);
        error.MessageText.ShouldContain("could not reach instance green");
        // Npgsql may try again without GSS encryption; every attempt is one counted error.
        endpoint.Stats.Errors.ShouldBeGreaterThanOrEqualTo(1);
        endpoint.Stats.Errors.ShouldBe(endpoint.Stats.Total);
        (await EventuallyAsync(() => endpoint.Stats.Active == 0)).ShouldBeTrue();
    }

    private async Task<byte[]> PsqlAsync(int port, string command)
    {
        var start = new ProcessStartInfo("psql")
        {
            ArgumentList = { "-X", "-h", "127.0.0.1", "-p", port.ToString(CultureInfo.InvariantCulture), "-U", servers.Blue.User, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", command },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        start.Environment["PGPASSWORD"] = servers.Blue.Password;
        start.Environment["PGSSLMODE"] = "prefer";
        using var process = Process.Start(start)!; // Start returns null only for shell-executed documents.
        using var output = new MemoryStream();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.StandardOutput.BaseStream.CopyToAsync(output);
        await process.WaitForExitAsync();
        process.ExitCode.ShouldBe(0, await stderr);
        return output.ToArray();
    }
}
