using Teal.Core.Errors;
using Teal.MySql.Connections;

namespace Teal.MySql.Tests.Connections;

public sealed class MySqlConnectionStringsTests
{
    [Fact]
    public void Parse_Uri_ReadsEveryPart()
    {
        var c = MySqlConnectionStrings.Parse("mysql://app%40x:p%3Ass@db.example:3307/shop?SslMode=None");

        c.Host.ShouldBe("db.example");
        c.Port.ShouldBe(3307);
        c.User.ShouldBe("app@x");
        c.Password.ShouldBe("p:ss");
        c.Database.ShouldBe("shop");
        c.Options["SslMode"].ShouldBe("None");
    }

    [Fact]
    public void Parse_UriWithoutPortOrDatabase_UsesDefaults()
    {
        var c = MySqlConnectionStrings.Parse("mariadb://root@127.0.0.1");

        c.Port.ShouldBe(3306);
        c.Database.ShouldBe("mysql");
        c.Password.ShouldBeNull();
    }

    [Fact]
    public void Parse_KeyValue_ReadsDriverSettings()
    {
        var c = MySqlConnectionStrings.Parse("Server=10.0.0.5;Port=3310;User ID=teal;Password=secret;Database=app");

        (c.Host, c.Port, c.User, c.Password, c.Database).ShouldBe(("10.0.0.5", 3310, "teal", "secret", "app"));
    }

    [Fact]
    public void Parse_InvalidText_RefusesWithoutEchoingIt()
    {
        var ex = Should.Throw<TealException>(() => MySqlConnectionStrings.Parse("mysql://user:hunter2@host/db?NoSuchSetting=hunter3"));

        ex.Code.ShouldBe("connection.invalid");
        ex.Message.ShouldNotContain("hunter2");
        ex.Message.ShouldNotContain("hunter3");
    }

    [Fact]
    public void Uri_RoundTripsThroughParse()
    {
        var uri = MySqlConnectionStrings.Uri("127.0.0.1", 4000, "teal", "a/b+c", "mysql");

        uri.ShouldStartWith("mysql://");
        var c = MySqlConnectionStrings.Parse(uri);
        (c.Host, c.Port, c.User, c.Password, c.Database).ShouldBe(("127.0.0.1", 4000, "teal", "a/b+c", "mysql"));
    }
}
