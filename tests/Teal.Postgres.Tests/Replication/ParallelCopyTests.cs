using Npgsql;
using Teal.Core.Deployments;
using Teal.Core.Engines;
using Teal.Postgres.Replication;
using Teal.Testing;

namespace Teal.Postgres.Tests.Replication;

/// <summary>
/// Teal's parallel initial copy (one exported snapshot, key or block ranges over several
/// sessions, subscription on the copy's slot without copy_data) against PostgreSQL's own
/// subscription copy of the same blue, while a client keeps writing on blue: both greens end
/// with blue's rows, none lost and none doubled, and the parallel green has its indexes and
/// foreign keys back, valid.
/// </summary>
public sealed class ParallelCopyTests
{
    private const string Db = "pcopy";

    static ParallelCopyTests()
    {
        // Small chunks, so the tables here are split (the default is 64 MB).
        Environment.SetEnvironmentVariable("TEAL_COPY_CHUNK_BYTES", (512 * 1024).ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    private const string Schema = """
        CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL);
        INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 1000) g;
        CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL REFERENCES customers, amount numeric(12, 2), note text, at timestamptz NOT NULL DEFAULT now());
        CREATE INDEX orders_customer ON orders (customer);
        CREATE INDEX orders_note ON orders (lower(note));
        INSERT INTO orders SELECT g, 1 + g % 1000, g / 7.0, repeat('n', g % 90), now() - g * interval '1 s' FROM generate_series(1, 60000) g;
        -- No key at all: copied in block ranges, identified by all columns.
        CREATE TABLE logs (at bigint NOT NULL, line text);
        ALTER TABLE logs REPLICA IDENTITY FULL;
        INSERT INTO logs SELECT g, 'line ' || g || repeat('.', g % 40) FROM generate_series(1, 40000) g;
        -- A text key: block ranges too.
        CREATE TABLE codes (code text PRIMARY KEY, n int, tags text[], doc jsonb);
        INSERT INTO codes SELECT md5(g::text), g, ARRAY['a' || g, NULL], jsonb_build_object('g', g) FROM generate_series(1, 30000) g;
        -- Partitioned, integer key: key ranges over the root.
        CREATE TABLE events (id int NOT NULL, kind text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
        CREATE TABLE events_a PARTITION OF events FOR VALUES FROM (MINVALUE) TO (20000);
        CREATE TABLE events_b PARTITION OF events FOR VALUES FROM (20000) TO (MAXVALUE);
        CREATE INDEX events_kind ON events (kind);
        INSERT INTO events SELECT g, 'k' || (g % 13) FROM generate_series(1, 40000) g;
        -- A generated column is not copied: green computes it.
        CREATE TABLE totals (id int PRIMARY KEY, a int, doubled int GENERATED ALWAYS AS (a * 2) STORED);
        INSERT INTO totals (id, a) SELECT g, g FROM generate_series(1, 500) g;
        CREATE TABLE empty_one (id int PRIMARY KEY);
        -- Arrays of user types and composites name blue's type OIDs in binary: copied as text.
        CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
        CREATE TYPE pair AS (a int, b text);
        CREATE DOMAIN moods_d AS mood[];
        CREATE TABLE feelings (id int PRIMARY KEY, now mood, history mood[], p pair, ps pair[], d moods_d);
        INSERT INTO feelings SELECT g, (ARRAY['sad', 'ok', 'happy']::mood[])[1 + g % 3], ARRAY['ok', 'sad']::mood[], ROW(g, 'p' || g)::pair, ARRAY[ROW(g, 'x')::pair], ARRAY['happy']::mood[] FROM generate_series(1, 20000) g;
        """;

    [Fact]
    public async Task ParallelCopy_UnderWrites_EqualsNativeCopy_IndexesAndForeignKeysBuiltAfter()
    {
        var blueStart = PostgresServer.StartAsync("15", LinkTestKit.Roomy);
        var nativeStart = PostgresServer.StartAsync("17");
        var parallelStart = PostgresServer.StartAsync("17");
        await using var blue = await blueStart;
        await using var nativeGreen = await nativeStart;
        await using var parallelGreen = await parallelStart;
        await LinkTestKit.CreateDatabaseAsync(blue, Db, Schema);

        await using var native = LinkTestKit.Link(blue, nativeGreen, Db, LinkTestKit.NewName("teal"));
        var name = LinkTestKit.NewName("teal");
        await using var parallel = LinkTestKit.Link(blue, parallelGreen, Db, name, new LinkSpec(name, LinkTestKit.Connection(blue, Db), LinkTestKit.Connection(parallelGreen, Db)) { CopyParallelism = 4 });

        // Writes on blue from before the copies start until both are replicating.
        using var stopWriting = new CancellationTokenSource();
        var writes = WriteLoadAsync(blue, stopWriting.Token);
        await Task.Delay(300);

        var seen = new List<ReplicationSnapshot>();
        // Both schemas first: blue's schema dump must not see the first deployment's Teal objects.
        (await native.CheckPrerequisitesAsync(default)).Failures.ShouldBeEmpty();
        (await parallel.CheckPrerequisitesAsync(default)).Failures.ShouldBeEmpty();
        await native.CopySchemaAsync(default);
        await parallel.CopySchemaAsync(default);
        await native.StartReplicationAsync(default);
        var nativeStarted = LinkTestKit.WaitForStateAsync(native, ReplicationState.Replicating, TimeSpan.FromMinutes(4));
        await parallel.StartReplicationAsync(default);
        var deadline = DateTime.UtcNow.AddMinutes(4);
        while (true)
        {
            await parallel.WriteHeartbeatAsync(default);
            var s = await parallel.ReadStatusAsync(default);
            seen.Add(s);
            s.State.ShouldNotBe(ReplicationState.Stopped, s.Reason);
            if (s.State == ReplicationState.Replicating)
            {
                break;
            }

            DateTime.UtcNow.ShouldBeLessThan(deadline, "the parallel copy did not finish in 4 minutes");
            await Task.Delay(100);
        }

        await nativeStarted;
        await Task.Delay(1000);
        await stopWriting.CancelAsync();
        var written = await writes;
        written.ShouldBeGreaterThan(0);

        // Progress was the copy's own, in rows and bytes per table, while it ran.
        var copying = seen.Where(s => s.Reason == "copying in parallel").ToList();
        copying.ShouldNotBeEmpty();
        var last = copying[^1].Tables.ToDictionary(t => t.Table);
        last.Keys.ShouldContain("public.orders");
        seen.SelectMany(s => s.Tables).Where(t => t.Table == "public.orders").Max(t => t.Bytes ?? 0).ShouldBeGreaterThan(0);

        // Both greens hold blue's rows, compared by Teal's verify once each has caught up.
        var nativeReport = await CaughtUpVerifyAsync(native);
        var parallelReport = await CaughtUpVerifyAsync(parallel);
        nativeReport.Matches.ShouldBeTrue(Describe(nativeReport));
        parallelReport.Matches.ShouldBeTrue(Describe(parallelReport));
        var nativeSums = nativeReport.Tables.Where(t => !t.Table.StartsWith("teal.", StringComparison.Ordinal)).ToDictionary(t => t.Table, t => (t.GreenRows, t.GreenChecksum));
        var parallelSums = parallelReport.Tables.Where(t => !t.Table.StartsWith("teal.", StringComparison.Ordinal)).ToDictionary(t => t.Table, t => (t.GreenRows, t.GreenChecksum));
        parallelSums.Keys.Order().ShouldBe(nativeSums.Keys.Order());
        foreach (var (table, sums) in nativeSums)
        {
            parallelSums[table].ShouldBe(sums, table);
        }

        parallelSums["public.orders"].GreenRows.ShouldBe(await blue.ScalarAsync<long>("SELECT count(*) FROM orders", Db));
        (await blue.ScalarAsync<long>("SELECT count(*) FROM orders WHERE note = 'during copy'", Db)).ShouldBeGreaterThan(0);
        (await parallelGreen.ScalarAsync<long>("SELECT count(*) FROM totals WHERE doubled = a * 2", Db)).ShouldBe(500);
        (await parallelGreen.ScalarAsync<string>("SELECT history::text || p::text || ps::text || d::text FROM feelings WHERE id = 7", Db)).ShouldBe("{ok,sad}(7,p7){\"(7,x)\"}{happy}");
        // A table copied whole was loaded frozen (no write reaches customers during the copy).
        await parallelGreen.ExecuteAsync("CREATE EXTENSION IF NOT EXISTS pg_visibility", Db);
        (await parallelGreen.ScalarAsync<bool>("SELECT bool_and(all_frozen) FROM pg_visibility_map('customers')", Db)).ShouldBeTrue();

        // Green's secondary indexes and foreign keys are back, valid; the copy's state is gone.
        var indexes = await parallelGreen.ScalarAsync<long>("SELECT count(*) FROM pg_indexes WHERE indexname IN ('orders_customer', 'orders_note', 'events_kind')", Db);
        indexes.ShouldBe(3);
        (await parallelGreen.ScalarAsync<long>("SELECT count(*) FROM pg_index WHERE NOT indisvalid", Db)).ShouldBe(0);
        // Primary keys were dropped for the copy too and are back, under their own names.
        (await parallelGreen.ScalarAsync<string>("SELECT string_agg(conname, ',' ORDER BY conname) FROM pg_constraint WHERE contype = 'p' AND conrelid IN ('orders'::regclass, 'customers'::regclass, 'codes'::regclass, 'feelings'::regclass)", Db))
            .ShouldBe("codes_pkey,customers_pkey,feelings_pkey,orders_pkey");
        (await parallelGreen.ScalarAsync<bool>("SELECT convalidated FROM pg_constraint WHERE contype = 'f' AND conrelid = 'orders'::regclass", Db)).ShouldBeTrue();
        (await parallelGreen.ScalarAsync<bool>($"SELECT to_regclass('teal.{name}_copy') IS NULL", Db)).ShouldBeTrue();
        // Partition indexes were built through the root, on every partition.
        (await parallelGreen.ScalarAsync<long>("SELECT count(*) FROM pg_indexes WHERE tablename IN ('events_a', 'events_b') AND indexdef LIKE '%(kind)%'", Db)).ShouldBe(2);

        await native.RemoveAsync(default);
        await parallel.RemoveAsync(default);
        (await blue.ScalarAsync<long>("SELECT count(*) FROM pg_replication_slots", Db)).ShouldBe(0);
    }

    [Fact]
    public async Task InterruptedParallelCopy_StartsOverCleanly_NoHalfCopyNoDuplicates()
    {
        var blueStart = PostgresServer.StartAsync("15", LinkTestKit.Roomy);
        var greenStart = PostgresServer.StartAsync("17");
        await using var blue = await blueStart;
        await using var green = await greenStart;
        await LinkTestKit.CreateDatabaseAsync(blue, Db, Schema);
        // Enough rows that the copy lasts seconds even on an idle machine, so that it is caught
        // in the middle (the shared schema copies in well under a second).
        await blue.ExecuteAsync("INSERT INTO logs SELECT g, 'line ' || g FROM generate_series(40001, 1500000) g", Db);
        var name = LinkTestKit.NewName("teal");
        var spec = new LinkSpec(name, LinkTestKit.Connection(blue, Db), LinkTestKit.Connection(green, Db)) { CopyParallelism = 3 };

        // The first link dies in the middle of the copy: its sessions are ended from outside.
        await using (var first = LinkTestKit.Link(blue, green, Db, name, spec))
        {
            (await first.CheckPrerequisitesAsync(default)).Failures.ShouldBeEmpty();
            await first.CopySchemaAsync(default);
            await first.StartReplicationAsync(default);
            await LinkTestKit.WaitUntilAsync(
                async () => await green.ScalarAsync<long>("SELECT count(*) FROM pg_stat_activity WHERE application_name = $$teal copy " + name + "$$ AND query LIKE 'COPY%'", Db) > 0,
                "a copy session on green",
                120);
            await blue.ScalarAsync<long>("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $$teal copy " + name + "$$", Db);
            var failed = await LinkTestKit.WaitForStateAsync(first, ReplicationState.Stopped, TimeSpan.FromSeconds(60));
            failed.Reason.ShouldNotBeNull().ShouldContain("parallel copy failed");
        }

        // What the crash left: the slot on blue, part of the rows on green, indexes dropped.
        (await green.ScalarAsync<bool>($"SELECT to_regclass('teal.{name}_copy') IS NOT NULL", Db)).ShouldBeTrue();
        (await green.ScalarAsync<long>("SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_customer'", Db)).ShouldBe(0);
        await blue.ExecuteAsync("INSERT INTO orders (id, customer, note) SELECT g, 1, 'after crash' FROM generate_series(1000001, 1000100) g", Db);

        // A new link (Teal restarted) starts the copy over from a new snapshot.
        await using var second = LinkTestKit.Link(blue, green, Db, name, spec);
        await second.StartReplicationAsync(default);
        await LinkTestKit.WaitForStateAsync(second, ReplicationState.Replicating, TimeSpan.FromMinutes(4));
        var report = await CaughtUpVerifyAsync(second);
        report.Matches.ShouldBeTrue(Describe(report));
        (await green.ScalarAsync<long>("SELECT count(*) FROM orders", Db)).ShouldBe(60100);
        (await green.ScalarAsync<long>("SELECT count(*) FROM logs", Db)).ShouldBe(1500000);
        (await green.ScalarAsync<long>("SELECT count(*) FROM (SELECT at FROM logs GROUP BY at HAVING count(*) > 1) d", Db)).ShouldBe(0);
        (await green.ScalarAsync<long>("SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_customer'", Db)).ShouldBe(1);
        (await green.ScalarAsync<bool>($"SELECT to_regclass('teal.{name}_copy') IS NULL", Db)).ShouldBeTrue();

        await blue.ExecuteAsync("UPDATE logs SET line = 'changed' WHERE at = 7", Db);
        await LinkTestKit.WaitUntilAsync(async () => await green.ScalarAsync<long>("SELECT count(*) FROM logs WHERE line = 'changed'", Db) == 1, "an update replicated after the copy");
        await second.RemoveAsync(default);
    }

    [Fact]
    public void BinaryRowCounter_CountsRowsAcrossBufferBoundaries()
    {
        // Header, then rows of (int4, NULL text, 3-byte text), then the trailer.
        var stream = new List<byte>();
        // Signature (its contents are not read), flags, extension length 2, and a 2-byte extension.
        stream.AddRange(new byte[11]);
        stream.AddRange(new byte[] { 0, 0, 0, 0, 0, 0, 0, 2, 9, 9 });
        for (var i = 0; i < 5; i++)
        {
            stream.AddRange(new byte[] { 0, 3, 0, 0, 0, 4, 0, 0, 0, (byte)i, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 3, (byte)'a', (byte)'b', (byte)'c' });
        }

        stream.AddRange(new byte[] { 0xff, 0xff });
        var bytes = stream.ToArray();
        for (var size = 1; size <= bytes.Length; size++)
        {
            var counter = new BinaryRowCounter();
            long rows = 0;
            for (var at = 0; at < bytes.Length; at += size)
            {
                rows += counter.Feed(bytes.AsSpan(at, Math.Min(size, bytes.Length - at)));
            }

            rows.ShouldBe(5, $"buffers of {size} bytes");
        }
    }

    /// <summary>Inserts, updates and deletes on blue (a client's writes) until told to stop; returns the statements run.</summary>
    private static async Task<int> WriteLoadAsync(PostgresServer blue, CancellationToken stop)
    {
        await using var conn = new NpgsqlConnection(blue.ConnectionString(Db));
        await conn.OpenAsync(CancellationToken.None);
        var n = 0;
        var id = 2_000_000L;
        while (!stop.IsCancellationRequested)
        {
            n++;
            id++;
            await using var cmd = new NpgsqlCommand(
                $"""
                INSERT INTO orders (id, customer, amount, note) VALUES ({id}, {1 + (id % 1000)}, 1.5, 'during copy');
                UPDATE orders SET amount = amount + 1 WHERE id = {1 + (n * 37 % 60000)};
                DELETE FROM orders WHERE id = {60000 - n};
                INSERT INTO logs VALUES ({id}, 'during');
                UPDATE codes SET n = n + 1 WHERE code = md5('{1 + (n % 30000)}');
                UPDATE events SET kind = 'moved' WHERE id = {1 + (n * 11 % 40000)};
                """,
                conn);
            await cmd.ExecuteNonQueryAsync(CancellationToken.None);
            await Task.Delay(5, CancellationToken.None);
        }

        return n;
    }

    private static async Task<VerifyReport> CaughtUpVerifyAsync(PostgresReplicationLink link)
    {
        VerifyReport report = null!;
        for (var attempt = 0; attempt < 5; attempt++)
        {
            var position = await link.ReadPositionAsync(Side.Blue, default);
            await link.WaitForPositionAsync(position, default);
            report = await link.VerifyAsync(null, default);
            if (report.Matches && report.Tables.All(t => t.ChangingChunks == 0))
            {
                return report;
            }

            await Task.Delay(1000);
        }

        return report;
    }

    private static string Describe(VerifyReport report) =>
        string.Join("; ", report.Tables.Where(t => !t.Matches).Select(t => $"{t.Table}: {t.BlueRows}/{t.GreenRows} {t.Problem}"));
}
