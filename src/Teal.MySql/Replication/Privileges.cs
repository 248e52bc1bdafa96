using MySqlConnector;
using Teal.MySql.Connections;

namespace Teal.MySql.Replication;

/// <summary>Global privileges of the connected account, as <c>information_schema.USER_PRIVILEGES</c> lists them.</summary>
internal static class Privileges
{
    /// <summary>What Teal's account needs: write through the fence, lock and unlock accounts, replicate, see every session.</summary>
    public static readonly string[] Required = ["SUPER", "CREATE USER", "REPLICATION SLAVE", "PROCESS", "SELECT", "RELOAD"];

    public static async Task<HashSet<string>> OfCurrentUserAsync(MySqlConnection connection, CancellationToken cancellationToken)
    {
        var rows = await Sql.RowsAsync(
            connection,
            """
            SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES
            WHERE GRANTEE = CONCAT('''', SUBSTRING_INDEX(CURRENT_USER(), '@', 1), '''@''', SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')
            """,
            cancellationToken);
        return rows.Select(r => r["PRIVILEGE_TYPE"] ?? string.Empty).ToHashSet(StringComparer.OrdinalIgnoreCase);
    }
}
