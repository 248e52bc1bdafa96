using Teal.Core.Engines;
using Teal.Processes;

namespace Teal.Postgres.Tests.Replication;

/// <summary>pg_dump, pg_dumpall and psql get blue's or green's password in their environment, never in argv.</summary>
public sealed class SchemaCopyToolTests
{
    [Theory]
    [InlineData("pg_dump", null)]
    [InlineData("pg_dumpall", "--database")]
    [InlineData("psql", "--dbname")]
    public void ToolSpec_PasswordOnlyInTheEnvironment(string tool, string? databaseOption)
    {
        var connection = new ConnectionInfo("127.0.0.1", 5432, "app", "Tool-Secret-42", "orders");

        var spec = Teal.Postgres.Replication.SchemaCopy.ToolSpec($"/usr/lib/postgresql/15/bin/{tool}", ["--schema-only"], connection, databaseOption);
        var info = ProcessRunner.StartInfo(spec with { RunAs = "postgres" });

        spec.Environment["PGPASSWORD"].ShouldBe("Tool-Secret-42");
        spec.Arguments.ShouldContain("--no-password");
        info.ArgumentList.ShouldNotContain(a => a.Contains("Tool-Secret-42", StringComparison.Ordinal));
        info.ArgumentList.ShouldContain("orders");
    }
}
