using Teal.Postgres.Replication;

namespace Teal.Postgres.Tests.Replication;

public sealed class SettingValuesTests
{
    [Theory]
    [InlineData("1GB", "1GB", "131072", "8kB", "integer")]
    [InlineData("1024MB", "1GB", "131072", "8kB", "integer")]
    [InlineData("8192kB", "8MB", "8192", "kB", "integer")]
    [InlineData("250ms", "250ms", "250", "ms", "integer")]
    [InlineData("1min", "1min", "60", "s", "integer")]
    [InlineData("on", "on", "on", "", "bool")]
    [InlineData("true", "on", "on", "", "bool")]
    [InlineData("200", "200", "200", "", "integer")]
    [InlineData("'pg_stat_statements'", "pg_stat_statements", "pg_stat_statements", "", "string")]
    public void Equivalent_SameValueWrittenDifferently_IsTrue(string expected, string shown, string raw, string unit, string type) =>
        SettingValues.Equivalent(expected, shown, raw, unit, type).ShouldBeTrue();

    [Theory]
    [InlineData("2GB", "1GB", "131072", "8kB", "integer")]
    [InlineData("off", "on", "on", "", "bool")]
    [InlineData("100", "200", "200", "", "integer")]
    [InlineData("lots", "200", "200", "", "integer")]
    public void Equivalent_DifferentValue_IsFalse(string expected, string shown, string raw, string unit, string type) =>
        SettingValues.Equivalent(expected, shown, raw, unit, type).ShouldBeFalse();
}
