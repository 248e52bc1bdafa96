using System.Net.Http.Json;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Teal.Core.Engines;
using Teal.Postgres.Connections;
using Teal.Postgres.Instances;
using Teal.Server.RemoteProxies;
using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Cli.Tests;

/// <summary>
/// Green's topology with real servers: <c>--target-readers</c> makes streaming readers of a
/// PostgreSQL 17 green (no client tool of 17 exists here), a reader endpoint serves blue, splits
/// new connections by the canary weight, is held back by the readers guardrail and moves to
/// green's readers at the switchover; a delete removes green's readers. A reader endpoint spreads
/// new connections over every streaming reader, round robin, before and after the switchover.
/// </summary>
public sealed class ReaderTopologyTests : IAsyncLifetime
{
    private const string ReaderRole = "app_reader";
    private const string ReaderPassword = "Reader-Pa55-zq";

    private TealHost _teal = null!; // Set in InitializeAsync, before any test runs.
    private PostgresServer _blue = null!; // Set in InitializeAsync.

    public async Task InitializeAsync()
    {
        _blue = await PostgresServer.StartAsync("15");
        _teal = await TealHost.StartAsync();
        await _blue.ExecuteAsync("CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g");
        // An application's read-only login; Teal copies it (and its password) to green.
        await _blue.ExecuteAsync($"CREATE ROLE {ReaderRole} LOGIN PASSWORD '{ReaderPassword}'; GRANT SELECT ON items TO {ReaderRole}");
        (await Run("instance", "add", "app", "--connection", _blue.Uri())).ExitCode.ShouldBe(0);
    }

    public async Task DisposeAsync()
    {
        // TealHost removes every managed instance it knows (green and its readers included).
        await _teal.DisposeAsync();
        await _blue.DisposeAsync();
    }

    [Fact]
    public async Task Readers_StreamFromGreen_CanarySplits_GuardrailRefusesStoppedReader_EndpointMovesAtSwitchover()
    {
        var endpointPort = ManagedPostgres.FreePort();
        (await Run("endpoint", "add", "reads", "--instance", "app", "--listen", $"127.0.0.1:{endpointPort}", "--reader")).ExitCode.ShouldBe(0);

        var created = await Run("create", "topo", "--source", "app", "--target-engine-version", "17", "--target-readers", "2", "--wait");

        created.ExitCode.ShouldBe(0, created.ToString());
        var deployment = await ShowAsync();
        var green = deployment.GetProperty("green").GetString()!;
        var readers = deployment.GetProperty("readers").EnumerateArray().Select(r => r.GetProperty("name").GetString()!).ToList();
        readers.ShouldBe([$"{green}-r1", $"{green}-r2"]);
        var reader1 = (await _teal.State.GetInstanceAsync($"{green}-r1", default))!;
        reader1.ReaderOf.ShouldBe(green);
        reader1.Version.ShouldStartWith("17");

        // A row written on blue is applied on green by replication, and streamed on to the reader.
        await _blue.ExecuteAsync("INSERT INTO items VALUES (1001, 'written after create')");
        await ServerWait.UntilAsync(async () => await ReaderScalarAsync<long>(reader1.Name, "SELECT count(*) FROM items WHERE id = 1001") == 1, "the row reaches green's reader");
        (await ReaderScalarAsync<bool>(reader1.Name, "SELECT pg_is_in_recovery()")).ShouldBeTrue();
        (await ShowTextAsync()).ShouldContain($"reader       {reader1.Name} 127.0.0.1:{reader1.Port} streaming");

        // Before the switchover the reader endpoint serves blue (Teal made no reader of blue).
        (await PortThroughEndpointAsync(endpointPort)).ShouldBe(_blue.Port);

        // Canary: out of range is refused by the CLI and the API, 50% splits new connections.
        var tooMuch = await Run("endpoint", "canary", "reads", "--green-percent", "150");
        tooMuch.ExitCode.ShouldBe(2, tooMuch.ToString());
        tooMuch.Stderr.ShouldContain("--green-percent must be between 0 and 100, not 150");
        using (var client = _teal.Client())
        {
            var refused = await client.PostAsJsonAsync("/api/endpoints/reads/canary", new { greenPercent = -1 });
            ((int)refused.StatusCode).ShouldBe(400);
            (await refused.Content.ReadAsStringAsync()).ShouldContain("must be between 0 and 100, not -1");
        }

        (await Run("endpoint", "canary", "reads", "--green-percent", "50")).ExitCode.ShouldBe(0);
        var ports = new List<int?>();
        for (var i = 0; i < 200; i++)
        {
            ports.Add(await PortThroughEndpointAsync(endpointPort));
        }

        // Green's primary is fenced by its own pg_hba.conf, which its readers do not share: the
        // application's login reads on green's readers, where the canary sends it, in turn.
        var reader2 = (await _teal.State.GetInstanceAsync($"{green}-r2", default))!;
        var toGreen = ports.Count(p => p == reader1.Port || p == reader2.Port);
        ports.Count(p => p == _blue.Port).ShouldBe(200 - toGreen);
        toGreen.ShouldBeInRange(60, 140, $"{toGreen} of 200 new connections went to green's readers at 50%");
        ports.Count(p => p == reader1.Port).ShouldBeGreaterThanOrEqualTo(toGreen / 2 - 5, string.Join(",", ports));
        ports.Count(p => p == reader2.Port).ShouldBeGreaterThanOrEqualTo(toGreen / 2 - 5, string.Join(",", ports));
        (await Run("endpoint", "list")).Stdout.ShouldContain($"app (reader, 50% to {green})");

        // Guardrail: a stopped reader refuses the switchover, naming it and the fix.
        var provisioner = _teal.Services.GetRequiredService<EngineRegistry>().Provisioner(reader1.Engine);
        await provisioner.StopAsync(reader2, default);
        var refusedSwitchover = await Run("switchover", "topo");
        refusedSwitchover.ExitCode.ShouldBe(1, refusedSwitchover.ToString());
        refusedSwitchover.Stderr.ShouldContain($"{reader2.Name} is not streaming (not connected)");
        refusedSwitchover.Stderr.ShouldContain($"start {reader2.Name} again");
        (await ShowAsync()).GetProperty("status").GetString().ShouldBe("AVAILABLE");
        await provisioner.StartAsync(reader2, default);
        await ServerWait.UntilAsync(async () => (await Run("check", "topo")).ExitCode == 0, "reader 2 streams again");

        var switched = await Run("switchover", "topo", "--wait");

        switched.ExitCode.ShouldBe(0, switched.ToString());
        // Green's readers took production's name as their stem and follow it.
        var moved = (await _teal.State.GetInstanceAsync("app-r1", default))!;
        moved.Port.ShouldBe(reader1.Port);
        moved.ReaderOf.ShouldBe("app");
        (await _teal.State.GetInstanceAsync(reader1.Name, default)).ShouldBeNull();
        // The reader endpoint now routes to green's reader, where the application's login reads
        // once the reader has replayed green's unfence; the canary is over.
        await ServerWait.UntilAsync(async () => await PortThroughEndpointAsync(endpointPort) == reader1.Port, "the application's login reads on green's reader through the endpoint");
        (await _teal.State.GetEndpointAsync("reads", default))!.CanaryInstance.ShouldBeNull();
        using var json = JsonDocument.Parse((await Run("instance", "list", "--output", "json")).Stdout);
        json.RootElement.EnumerateArray().Where(i => i.GetProperty("readerOf").GetString() == "app").Select(i => i.GetProperty("name").GetString()).Order().ShouldBe(["app-r1", "app-r2"]);
    }

    [Fact]
    public async Task Canary_ClientsReadOnGreensReaderBeforeSwitchover_WhileGreensPrimaryRefusesEveryWrite()
    {
        var reads = ManagedPostgres.FreePort();
        (await Run("endpoint", "add", "reads", "--instance", "app", "--listen", $"127.0.0.1:{reads}", "--reader")).ExitCode.ShouldBe(0);
        var created = await Run("create", "canary", "--source", "app", "--target-readers", "1", "--wait");
        created.ExitCode.ShouldBe(0, created.ToString());
        var green = (await _teal.State.GetInstanceAsync((await _teal.State.ListDeploymentsAsync(default)).ShouldHaveSingleItem().Green, default))!;
        var reader = (await _teal.State.GetInstanceAsync($"{green.Name}-r1", default))!;

        (await Run("endpoint", "canary", "reads", "--green-percent", "100")).ExitCode.ShouldBe(0);

        // Real clients, the application's login, read green's rows on green's reader: a row
        // written on blue after create comes back through the endpoint from the reader.
        await _blue.ExecuteAsync("INSERT INTO items VALUES (2001, 'canary row')");
        await ServerWait.UntilAsync(async () => await CountThroughAsync(reads, "SELECT count(*) FROM items WHERE id = 2001") == 1, "the canary row is read through the endpoint");
        for (var i = 0; i < 5; i++)
        {
            (await PortThroughEndpointAsync(reads)).ShouldBe(reader.Port);
            (await CountThroughAsync(reads, "SELECT count(*) FROM items")).ShouldBe(501);
        }

        // A write through the canary route, as the application and as green's own superuser: the
        // reader is a hot standby.
        var superuser = ConnectionStrings.Parse((await Run("instance", "url", green.Name)).Stdout.Trim());
        foreach (var (user, password) in new[] { (ReaderRole, ReaderPassword), (superuser.User, superuser.Password!) })
        {
            var throughEndpoint = await WriteAsync("127.0.0.1", reads, user, password);
            throughEndpoint.ShouldNotBeNull($"{user} wrote through the canary").SqlState.ShouldBe(PostgresErrorCodes.ReadOnlySqlTransaction);
        }

        // Green's primary, directly: the application's login and green's own superuser are
        // refused at connection start by the fence (green's pg_hba.conf), not by a role check.
        foreach (var (user, password) in new[] { (ReaderRole, ReaderPassword), (superuser.User, superuser.Password!) })
        {
            var direct = await WriteAsync(green.Host, green.Port, user, password);
            direct.ShouldNotBeNull($"{user} wrote on green's primary").SqlState.ShouldBe(PostgresErrorCodes.InvalidAuthorizationSpecification);
            direct.MessageText.ShouldContain("pg_hba.conf rejects connection");
        }

        // Green's primary through a proxy endpoint declared on it: the same refusal.
        var onGreen = ManagedPostgres.FreePort();
        (await Run("endpoint", "add", "green-writes", "--instance", green.Name, "--listen", $"127.0.0.1:{onGreen}")).ExitCode.ShouldBe(0);
        var proxied = await WriteAsync("127.0.0.1", onGreen, superuser.User, superuser.Password!);
        proxied.ShouldNotBeNull().SqlState.ShouldBe(PostgresErrorCodes.InvalidAuthorizationSpecification);
        (await Run("endpoint", "remove", "green-writes")).ExitCode.ShouldBe(0);
        (await ReaderScalarAsync<long>(green.Name, "SELECT count(*) FROM items WHERE id = 3001")).ShouldBe(0);

        // The guardrail sees green fenced by its file; the switchover opens it.
        var check = await Run("check", "canary");
        check.ExitCode.ShouldBe(0, check.ToString());
        check.Stdout.ShouldContain("its pg_hba.conf admits only teal_control");
        var switched = await Run("switchover", "canary", "--wait");
        switched.ExitCode.ShouldBe(0, switched.ToString());
        var opened = await WriteAsync(green.Host, green.Port, superuser.User, superuser.Password!);
        opened.ShouldBeNull();
    }

    /// <summary>Tries to insert a row as a client; the refusal, or null when the row was written.</summary>
    private static async Task<PostgresException?> WriteAsync(string host, int port, string user, string password)
    {
        var builder = new NpgsqlConnectionStringBuilder { Host = host, Port = port, Username = user, Password = password, Database = "postgres", Pooling = false };
        await using var conn = new NpgsqlConnection(builder.ConnectionString);
        try
        {
            await conn.OpenAsync();
            await using var command = new NpgsqlCommand("INSERT INTO items VALUES (3001, 'written by a client')", conn);
            await command.ExecuteNonQueryAsync();
            return null;
        }
        catch (PostgresException ex)
        {
            return ex;
        }
    }

    private static async Task<long> CountThroughAsync(int endpointPort, string sql)
    {
        var builder = new NpgsqlConnectionStringBuilder { Host = "127.0.0.1", Port = endpointPort, Username = ReaderRole, Password = ReaderPassword, Database = "postgres", Pooling = false };
        await using var conn = new NpgsqlConnection(builder.ConnectionString);
        await conn.OpenAsync();
        await using var command = new NpgsqlCommand(sql, conn);
        return (long)(await command.ExecuteScalarAsync())!;
    }

    [Fact]
    public async Task Delete_BeforeSwitchover_RemovesGreensReaders()
    {
        var created = await Run("create", "gone", "--source", "app", "--target-readers", "1", "--wait");
        created.ExitCode.ShouldBe(0, created.ToString());
        var green = (await ShowAsync("gone")).GetProperty("green").GetString()!;
        var reader = (await _teal.State.GetInstanceAsync($"{green}-r1", default))!;
        Directory.Exists(reader.Managed!.Directory).ShouldBeTrue();

        var deleted = await Run("delete", "gone", "--delete-target");

        deleted.ExitCode.ShouldBe(0, deleted.ToString());
        (await _teal.State.GetInstanceAsync(reader.Name, default)).ShouldBeNull();
        Directory.Exists(reader.Managed.Directory).ShouldBeFalse();
        (await Run("events", "--output", "json")).Stdout.ShouldContain($"readers removed: {reader.Name}");
    }

    [Fact]
    public async Task TargetReadersOutOfRange_RefusedWithClearError()
    {
        var run = await Run("create", "many", "--source", "app", "--target-readers", "9");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldBe("error: --target-readers must be between 0 and 8, not 9");
        (await Run("list", "--output", "json")).Stdout.Trim().ShouldBe("[]");
    }

    /// <summary>
    /// The server port behind a new connection through the endpoint as the application's reader
    /// login; null when the server refused that login (a role without LOGIN: a reader that has
    /// not replayed green's unfence yet, on a green fenced the old way).
    /// </summary>
    private static async Task<int?> PortThroughEndpointAsync(int endpointPort)
    {
        var builder = new NpgsqlConnectionStringBuilder { Host = "127.0.0.1", Port = endpointPort, Username = ReaderRole, Password = ReaderPassword, Database = "postgres", Pooling = false };
        await using var conn = new NpgsqlConnection(builder.ConnectionString);
        try
        {
            await conn.OpenAsync();
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.InvalidAuthorizationSpecification && ex.MessageText.Contains("not permitted to log in", StringComparison.Ordinal))
        {
            return null;
        }

        await using var command = new NpgsqlCommand("SELECT current_setting('port')::int FROM items LIMIT 1", conn);
        return (int)(await command.ExecuteScalarAsync())!;
    }

    private async Task<T> ReaderScalarAsync<T>(string reader, string sql)
    {
        var url = (await Run("instance", "url", reader, "--as-teal")).Stdout.Trim();
        await using var conn = new NpgsqlConnection(Teal.Postgres.Connections.PostgresConnections.Builder(Teal.Postgres.Connections.ConnectionStrings.Parse(url), pooling: false).ConnectionString);
        await conn.OpenAsync();
        await using var command = new NpgsqlCommand(sql, conn);
        return (T)(await command.ExecuteScalarAsync())!;
    }

    private async Task<JsonElement> ShowAsync(string name = "topo")
    {
        var run = await Run("show", name, "--output", "json");
        run.ExitCode.ShouldBe(0, run.ToString());
        return JsonDocument.Parse(run.Stdout).RootElement.Clone();
    }

    private async Task<string> ShowTextAsync() => (await Run("show", "topo")).Stdout;

    [Fact]
    public async Task ReaderEndpoint_SpreadsOverBothReaders_BeforeAndAfterSwitchover()
    {
        var productionReads = ManagedPostgres.FreePort();
        (await Run("endpoint", "add", "reads", "--instance", "app", "--listen", $"127.0.0.1:{productionReads}", "--reader")).ExitCode.ShouldBe(0);
        var created = await Run("create", "spread", "--source", "app", "--target-readers", "2", "--wait");
        created.ExitCode.ShouldBe(0, created.ToString());
        var green = (await _teal.State.ListDeploymentsAsync(default)).ShouldHaveSingleItem().Green;
        var r1 = (await _teal.State.GetInstanceAsync($"{green}-r1", default))!;
        var r2 = (await _teal.State.GetInstanceAsync($"{green}-r2", default))!;

        // Before the switchover: a reader endpoint on green (fenced: only Teal's login reads there).
        var greenReads = ManagedPostgres.FreePort();
        (await Run("endpoint", "add", "green-reads", "--instance", green, "--listen", $"127.0.0.1:{greenReads}", "--reader")).ExitCode.ShouldBe(0);
        var teal = ConnectionStrings.Parse((await Run("instance", "url", r1.Name, "--as-teal")).Stdout.Trim());
        var before = await PortsThroughAsync(greenReads, teal.User, teal.Password!, 10);
        before.Count(p => p == r1.Port).ShouldBe(5, string.Join(",", before));
        before.Count(p => p == r2.Port).ShouldBe(5, string.Join(",", before));
        (await Run("endpoint", "remove", "green-reads")).ExitCode.ShouldBe(0);

        var switched = await Run("switchover", "spread", "--wait");

        switched.ExitCode.ShouldBe(0, switched.ToString());
        // The application's login reads on green's readers once they replayed green's unfence.
        await ServerWait.UntilAsync(async () => (await PortsThroughAsync(productionReads, ReaderRole, ReaderPassword, 2)).All(p => p == r1.Port || p == r2.Port), "the application's login reads through the reader endpoint");
        var after = await PortsThroughAsync(productionReads, ReaderRole, ReaderPassword, 10);
        after.Count(p => p == r1.Port).ShouldBe(5, string.Join(",", after));
        after.Count(p => p == r2.Port).ShouldBe(5, string.Join(",", after));

        // The route table a `teal proxy` follows carries every reader, not only the first.
        var table = _teal.Services.GetRequiredService<ProxyRouteTableSource>();
        async Task<List<int>> TablePortsAsync() => [.. (await table.ReadAsync(default)).Endpoints.Single(e => e.Spec.Name == "reads").Targets.Select(t => t.Port)];
        (await TablePortsAsync()).ShouldBe([r1.Port, r2.Port]);

        // A reader that stops streaming leaves the live route and the table once the monitor sees
        // it, with no flip or restart; it comes back when it streams again.
        var provisioner = _teal.Services.GetRequiredService<EngineRegistry>().Provisioner(r2.Engine);
        var second = (await _teal.State.GetInstanceAsync("app-r2", default))!;
        second.Port.ShouldBe(r2.Port);
        await provisioner.StopAsync(second, default);
        // The live route and the route table each follow the readers' streaming on their own
        // reads of it, moments apart: each is waited for.
        await ServerWait.UntilAsync(async () => (await PortsThroughAsync(productionReads, ReaderRole, ReaderPassword, 4)).All(p => p == r1.Port), "new reads leave the stopped reader");
        await ServerWait.UntilAsync(async () => (await TablePortsAsync()).SequenceEqual([r1.Port]), "the route table drops the stopped reader");
        (await PortsThroughAsync(productionReads, ReaderRole, ReaderPassword, 6)).ShouldAllBe(p => p == r1.Port);

        await provisioner.StartAsync(second, default);
        await ServerWait.UntilAsync(async () => (await PortsThroughAsync(productionReads, ReaderRole, ReaderPassword, 4)).Contains(r2.Port), "the reader streams again and takes reads");
        (await TablePortsAsync()).ShouldBe([r1.Port, r2.Port]);
        var again = await PortsThroughAsync(productionReads, ReaderRole, ReaderPassword, 10);
        again.Count(p => p == r2.Port).ShouldBe(5, string.Join(",", again));
    }

    [Fact]
    public async Task Canary_SpreadsOverEveryStreamingReaderOfGreen_AndFollowsThem()
    {
        var reads = ManagedPostgres.FreePort();
        (await Run("endpoint", "add", "reads", "--instance", "app", "--listen", $"127.0.0.1:{reads}", "--reader")).ExitCode.ShouldBe(0);
        var created = await Run("create", "spread", "--source", "app", "--target-readers", "2", "--wait");
        created.ExitCode.ShouldBe(0, created.ToString());
        var green = (await _teal.State.ListDeploymentsAsync(default)).ShouldHaveSingleItem().Green;
        var r1 = (await _teal.State.GetInstanceAsync($"{green}-r1", default))!;
        var r2 = (await _teal.State.GetInstanceAsync($"{green}-r2", default))!;

        (await Run("endpoint", "canary", "reads", "--green-percent", "100")).ExitCode.ShouldBe(0);

        // Every new read connection goes to green's readers, each in turn, as the application's login.
        var both = await PortsThroughAsync(reads, ReaderRole, ReaderPassword, 10);
        both.Count(p => p == r1.Port).ShouldBe(5, string.Join(",", both));
        both.Count(p => p == r2.Port).ShouldBe(5, string.Join(",", both));
        // A `teal proxy` gets the same readers from its route table.
        var table = _teal.Services.GetRequiredService<ProxyRouteTableSource>();
        async Task<List<int>> CanaryPortsInTableAsync() => [.. (await table.ReadAsync(default)).Endpoints.Single(e => e.Spec.Name == "reads").CanaryTargets.Select(t => t.Port)];
        (await CanaryPortsInTableAsync()).ShouldBe([r1.Port, r2.Port]);

        // A reader of green that stops streaming leaves the canary once the monitor sees it, and
        // takes its share again when it streams.
        var provisioner = _teal.Services.GetRequiredService<EngineRegistry>().Provisioner(r2.Engine);
        await provisioner.StopAsync(r2, default);
        await ServerWait.UntilAsync(async () => await TryPortsThroughAsync(reads, 4) is { } ports && ports.All(p => p == r1.Port), "the canary leaves the stopped reader");
        await ServerWait.UntilAsync(async () => (await CanaryPortsInTableAsync()).SequenceEqual([r1.Port]), "the route table's canary drops the stopped reader");
        (await PortsThroughAsync(reads, ReaderRole, ReaderPassword, 6)).ShouldAllBe(p => p == r1.Port);

        await provisioner.StartAsync(r2, default);
        await ServerWait.UntilAsync(async () => (await PortsThroughAsync(reads, ReaderRole, ReaderPassword, 4)).Contains(r2.Port), "the reader streams again and takes canary reads");
        (await CanaryPortsInTableAsync()).ShouldBe([r1.Port, r2.Port]);
    }

    /// <summary>The ports of <paramref name="count"/> reads through the endpoint; null when one failed (sent to a stopped reader).</summary>
    private static async Task<List<int>?> TryPortsThroughAsync(int endpointPort, int count)
    {
        try
        {
            return await PortsThroughAsync(endpointPort, ReaderRole, ReaderPassword, count);
        }
        catch (NpgsqlException)
        {
            return null;
        }
    }

    [Fact]
    public async Task Switchback_GreensReadersKeepTakingReads_WhileGreensPrimaryIsFencedAndBlueWrites()
    {
        var created = await Run("create", "back", "--source", "app", "--target-readers", "1", "--wait");
        created.ExitCode.ShouldBe(0, created.ToString());
        var green = (await _teal.State.GetInstanceAsync((await _teal.State.ListDeploymentsAsync(default)).ShouldHaveSingleItem().Green, default))!;
        var reader = (await _teal.State.GetInstanceAsync($"{green.Name}-r1", default))!;
        // Asked now: the switchover renames green.
        var superuser = ConnectionStrings.Parse((await Run("instance", "url", green.Name)).Stdout.Trim());
        var switched = await Run("switchover", "back", "--wait");
        switched.ExitCode.ShouldBe(0, switched.ToString());

        var back = await Run("switchback", "back", "--wait");

        back.ExitCode.ShouldBe(0, back.ToString());
        back.Stdout.ShouldContain("switchback completed");
        // Blue is the writer again, for its own superuser too.
        await _blue.ExecuteAsync("INSERT INTO items VALUES (4001, 'written after the switchback')");
        // Green's reader still admits the application's login (green is fenced by its own
        // pg_hba.conf, not by NOLOGIN, which the reader would replay) and streams blue's new row,
        // applied on green by replication again.
        await ServerWait.UntilAsync(async () => await ReadOnAsync(reader.Port, "SELECT count(*) FROM items WHERE id = 4001") == 1, "blue's row is read by the application's login on green's reader");
        (await ReadOnAsync(reader.Port, "SELECT count(*) FROM items")).ShouldBe(501);
        // Green's primary refuses the application's login and its own superuser at connection start.
        foreach (var (user, password) in new[] { (ReaderRole, ReaderPassword), (superuser.User, superuser.Password!) })
        {
            var direct = await WriteAsync(green.Host, green.Port, user, password);
            direct.ShouldNotBeNull($"{user} wrote on green's primary after the switchback").SqlState.ShouldBe(PostgresErrorCodes.InvalidAuthorizationSpecification);
            direct.MessageText.ShouldContain("pg_hba.conf rejects connection");
        }

        var check = await Run("check", "back");
        check.Stdout.ShouldContain("its pg_hba.conf admits only teal_control");
    }

    /// <summary>A count read on a server as the application's login.</summary>
    private static async Task<long> ReadOnAsync(int port, string sql)
    {
        var builder = new NpgsqlConnectionStringBuilder { Host = "127.0.0.1", Port = port, Username = ReaderRole, Password = ReaderPassword, Database = "postgres", Pooling = false };
        await using var conn = new NpgsqlConnection(builder.ConnectionString);
        await conn.OpenAsync();
        await using var command = new NpgsqlCommand(sql, conn);
        return (long)(await command.ExecuteScalarAsync())!;
    }

    [Fact]
    public async Task RemoveReaderByHand_DropsItsSlotOnGreen_AndItsCopyLeftGreensFenceDefaultOut()
    {
        var created = await Run("create", "gone", "--source", "app", "--target-readers", "1", "--wait");
        created.ExitCode.ShouldBe(0, created.ToString());
        var green = (await _teal.State.GetInstanceAsync((await _teal.State.ListDeploymentsAsync(default)).ShouldHaveSingleItem().Green, default))!;
        var reader = (await _teal.State.GetInstanceAsync($"{green.Name}-r1", default))!;
        // Green is fenced, its read-only default included; the reader is a copy of it, but a
        // standby is read-only by itself and must not keep that default once promoted.
        (await File.ReadAllTextAsync(Path.Combine(green.Managed!.Directory, "data", "postgresql.auto.conf"))).ShouldContain("default_transaction_read_only");
        (await File.ReadAllTextAsync(Path.Combine(reader.Managed!.Directory, "data", "postgresql.auto.conf"))).ShouldNotContain("default_transaction_read_only");
        (await SlotsOnAsync(green.Name, reader.ReplicationSlot!)).ShouldBe(1);

        var removed = await Run("instance", "remove", reader.Name, "--delete-data");

        removed.ExitCode.ShouldBe(0, removed.ToString());
        (await SlotsOnAsync(green.Name, reader.ReplicationSlot!)).ShouldBe(0);
        Directory.Exists(reader.Managed.Directory).ShouldBeFalse();
    }

    private async Task<long> SlotsOnAsync(string instance, string slot)
    {
        var url = (await Run("instance", "url", instance, "--as-teal")).Stdout.Trim();
        await using var conn = new NpgsqlConnection(PostgresConnections.Builder(ConnectionStrings.Parse(url), pooling: false).ConnectionString);
        await conn.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", conn);
        command.Parameters.AddWithValue(slot);
        return (long)(await command.ExecuteScalarAsync())!;
    }

    /// <summary>The server port behind each of <paramref name="count"/> new connections through the endpoint, one after another.</summary>
    private static async Task<List<int>> PortsThroughAsync(int endpointPort, string user, string password, int count)
    {
        var ports = new List<int>();
        for (var i = 0; i < count; i++)
        {
            var builder = new NpgsqlConnectionStringBuilder { Host = "127.0.0.1", Port = endpointPort, Username = user, Password = password, Database = "postgres", Pooling = false };
            await using var conn = new NpgsqlConnection(builder.ConnectionString);
            await conn.OpenAsync();
            await using var command = new NpgsqlCommand("SELECT current_setting('port')::int", conn);
            ports.Add((int)(await command.ExecuteScalarAsync())!);
        }

        return ports;
    }

    private Task<CliRun> Run(params string[] args) =>
        CliRun.RunAsync([.. args, "--server", _teal.Url.ToString(), "--data-dir", _teal.DataDirectory]);
}

