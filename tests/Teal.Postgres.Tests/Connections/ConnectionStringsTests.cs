using Teal.Core.Errors;
using Teal.Postgres.Connections;

namespace Teal.Postgres.Tests.Connections;

public sealed class ConnectionStringsTests
{
    [Fact]
    public void Parse_Uri_ReadsEveryPart()
    {
        var c = ConnectionStrings.Parse("postgresql://app:s%40cret@db.example:6543/shop?sslmode=disable");
        c.Host.ShouldBe("db.example");
        c.Port.ShouldBe(6543);
        c.User.ShouldBe("app");
        c.Password.ShouldBe("s@cret");
        c.Database.ShouldBe("shop");
        c.Options["SSL Mode"].ShouldBe("Disable");
    }

    [Fact]
    public void Parse_LibpqWithQuotedValue_ReadsEveryPart()
    {
        var c = ConnectionStrings.Parse(@"host=127.0.0.1 port=5433 user=teal password='it\'s a secret' dbname=app");
        c.Host.ShouldBe("127.0.0.1");
        c.Port.ShouldBe(5433);
        c.Password.ShouldBe("it's a secret");
        c.Database.ShouldBe("app");
    }

    [Fact]
    public void Parse_NpgsqlStyle_ReadsEveryPart()
    {
        var c = ConnectionStrings.Parse("Host=localhost;Port=5432;Username=u;Password=p;Database=d");
        (c.Host, c.Port, c.User, c.Password, c.Database).ShouldBe(("localhost", 5432, "u", "p", "d"));
    }

    [Fact]
    public void Parse_NoDatabase_DefaultsToUserName()
    {
        ConnectionStrings.Parse("host=h user=alice").Database.ShouldBe("alice");
    }

    [Fact]
    public void Parse_UnknownSetting_RefusesWithoutEchoingThePassword()
    {
        var ex = Should.Throw<TealException>(() => ConnectionStrings.Parse("host=h password=hunter2 colour=blue"));
        ex.Code.ShouldBe("connection.invalid");
        ex.Message.ShouldContain("colour");
        ex.Message.ShouldNotContain("hunter2");
    }

    [Fact]
    public void ToString_NeverShowsThePassword()
    {
        ConnectionStrings.Parse("postgresql://u:hunter2@h:1/d").ToString().ShouldNotContain("hunter2");
    }
}
