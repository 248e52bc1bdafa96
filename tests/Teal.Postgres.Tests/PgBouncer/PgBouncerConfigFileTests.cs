using System.Text;
using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Postgres.PgBouncer;

namespace Teal.Postgres.Tests.PgBouncer;

public sealed class PgBouncerConfigFileTests
{
    private static readonly EndpointTarget Green = new("green", "10.0.0.7", 5499, "shop");

    [Fact]
    public void Repoint_ReplacesHostPortDbnameInPlace_KeepsEverythingElse()
    {
        const string text = "[databases]\nshop = host=10.0.0.5  port=5432 dbname=shop_old user=app pool_size=40\nother = host=10.0.0.5 port=5432\n[pgbouncer]\nlisten_port = 6432\n";

        var updated = PgBouncerConfigFile.Repoint(text, "shop", Green);

        updated.ShouldBe("[databases]\nshop = host=10.0.0.7  port=5499 dbname=shop user=app pool_size=40\nother = host=10.0.0.5 port=5432\n[pgbouncer]\nlisten_port = 6432\n");
    }

    [Fact]
    public void Repoint_MissingSettings_AreAppendedBeforeTrailingSpaceAndCrLf()
    {
        const string text = "[databases]\r\nshop = pool_size=40  \r\n";

        PgBouncerConfigFile.Repoint(text, "shop", Green).ShouldBe("[databases]\r\nshop = pool_size=40 host=10.0.0.7 port=5499 dbname=shop  \r\n");
    }

    [Fact]
    public void Repoint_QuotedValuesAndSpacesAroundEquals_AreUnderstood()
    {
        const string text = "[databases]\nshop = host = 'db one' port= 5432 dbname='it''s'\n";

        var entry = PgBouncerConfigFile.FindEntry(text, "shop")!;
        entry["host"].ShouldBe("db one");
        entry["dbname"].ShouldBe("it's");
        PgBouncerConfigFile.Repoint(text, "shop", Green with { Database = "a b" })
            .ShouldBe("[databases]\nshop = host = 10.0.0.7 port= 5499 dbname='a b'\n");
    }

    [Fact]
    public void FindEntry_OnlyInDatabasesSection_QuotedNames_LastDuplicateWins()
    {
        const string text = "[pgbouncer]\nshop = host=nope\n[databases]\n; shop = host=commented\n\"my \"\"shop\"\"\" = host=a\nshop = host=first\nshop = host=second\n[users]\nshop = pool_mode=session\n";

        PgBouncerConfigFile.FindEntry(text, "shop")!["host"].ShouldBe("second");
        PgBouncerConfigFile.FindEntry(text, "my \"shop\"")!["host"].ShouldBe("a");
        PgBouncerConfigFile.FindEntry(text, "absent").ShouldBeNull();
    }

    [Fact]
    public void Repoint_NoSuchEntry_ThrowsWithHint()
    {
        var error = Should.Throw<TealException>(() => PgBouncerConfigFile.Repoint("[databases]\nother = host=x\n", "shop", Green));

        error.Code.ShouldBe("endpoint.pgbouncer-entry-missing");
        error.Hint.ShouldNotBeNull();
    }

    [Fact]
    public void DecodeEncode_NonUtf8Bytes_RoundTripExactly()
    {
        var bytes = new byte[] { 0x3B, 0x20, 0xE9, 0xFF, 0xC3, 0x0A }
            .Concat(Encoding.ASCII.GetBytes("[databases]\nshop = host=a port=1\n"))
            .ToArray();

        var updated = PgBouncerConfigFile.Encode(PgBouncerConfigFile.Repoint(PgBouncerConfigFile.Decode(bytes), "shop", Green));

        updated.Take(6).ShouldBe(bytes.Take(6));
        Encoding.ASCII.GetString(updated, 6, updated.Length - 6).ShouldBe("[databases]\nshop = host=10.0.0.7 port=5499 dbname=shop\n");
    }

    [Fact]
    public async Task AtomicWrite_KeepsModeAndFollowsSymbolicLinks()
    {
        var directory = Directory.CreateTempSubdirectory("teal-ini-");
        try
        {
            var real = Path.Combine(directory.FullName, "real.ini");
            var link = Path.Combine(directory.FullName, "pgbouncer.ini");
            await File.WriteAllTextAsync(real, "old");
            File.SetUnixFileMode(real, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);
            File.CreateSymbolicLink(link, real);

            await AtomicFile.WriteAsync(link, Encoding.ASCII.GetBytes("new"), await AtomicFile.ReadOwnerAsync(link, CancellationToken.None), CancellationToken.None);

            (await File.ReadAllTextAsync(real)).ShouldBe("new");
            new FileInfo(link).LinkTarget.ShouldBe(real);
            File.GetUnixFileMode(real).ShouldBe(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);
            Directory.GetFiles(directory.FullName).Length.ShouldBe(2);
        }
        finally
        {
            directory.Delete(recursive: true);
        }
    }
}
