using Teal.Postgres.Replication;
using Teal.Testing;

namespace Teal.Postgres.Tests.Replication;

/// <summary>
/// The link's query helpers take <c>params object?[]</c>, which C# fills with a lone string[]
/// itself (array covariance): the helpers bind such an array as one parameter, so
/// <c>= ANY($1)</c> gets every name rather than the first.
/// </summary>
public sealed class SqlTests(Postgres15Fixture pg) : IClassFixture<Postgres15Fixture>
{
    [Fact]
    public async Task ScalarAsync_LoneStringArray_IsOneArrayParameter()
    {
        await using var conn = await pg.Server.OpenAsync();
        string[] names = ["a", "b", "c"];

        var count = await conn.ScalarAsync<int>("SELECT cardinality($1::text[])", CancellationToken.None, names);

        count.ShouldBe(3);
    }

    [Fact]
    public async Task QueryAsync_LoneStringArrayAndListOfValues_BindAsWritten()
    {
        await using var conn = await pg.Server.OpenAsync();
        string[] names = ["x", "y"];

        var fromArray = await conn.QueryAsync("SELECT unnest($1::text[])", r => r.GetString(0), CancellationToken.None, names);
        var fromValues = await conn.QueryAsync("SELECT $1::text || $2::text", r => r.GetString(0), CancellationToken.None, "x", "y");

        fromArray.ShouldBe(["x", "y"]);
        fromValues.ShouldBe(["xy"]);
    }

    [Fact]
    public async Task OpenTransactionsQuery_RunsOnAServer_AndListsAnOpenTransaction()
    {
        await using var open = await pg.Server.OpenAsync();
        await using var transaction = await open.BeginTransactionAsync();
        await open.ExecuteAsync("SELECT txid_current()", CancellationToken.None);
        await using var conn = await pg.Server.OpenAsync();

        var rows = await conn.QueryAsync(PostgresReplicationLink.OpenTransactions, r => r.GetInt32(0), CancellationToken.None);

        rows.ShouldContain(open.ProcessID);
    }
}
