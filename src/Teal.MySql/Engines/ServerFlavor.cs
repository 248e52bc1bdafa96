namespace Teal.MySql.Engines;

/// <summary>
/// Which member of the MySQL family a server is, and the differences Teal has to mind. Teal
/// implements MariaDB (10.5+); MySQL 8 differs where it matters to blue/green and is refused
/// at create time with these differences named, so no code path silently treats one as the other:
/// <list type="bullet">
/// <item>GTIDs: MariaDB's <c>domain-server-seq</c> lists (<c>@@gtid_binlog_pos</c>,
/// <c>MASTER_GTID_WAIT</c>, <c>CHANGE MASTER TO MASTER_USE_GTID=slave_pos</c>) against MySQL's
/// <c>uuid:1-N</c> sets (<c>@@gtid_executed</c>, <c>WAIT_FOR_EXECUTED_GTID_SET</c>,
/// <c>SOURCE_AUTO_POSITION=1</c>).</item>
/// <item>Fence: MySQL 8's <c>super_read_only</c> stops SUPER users too; MariaDB has none, and
/// its <c>read_only</c> lets SUPER (10.5–10.11, where SUPER implies READ ONLY ADMIN) and
/// READ ONLY ADMIN users write, so Teal also locks those accounts and ends their sessions.</item>
/// <item>Authentication: MySQL 8 defaults to <c>caching_sha2_password</c>, which over plain TCP
/// needs the server's RSA key (<c>AllowPublicKeyRetrieval</c>) or TLS; MariaDB uses
/// <c>mysql_native_password</c>/<c>ed25519</c>.</item>
/// <item>Consistent snapshot: MariaDB reports the binlog position of
/// <c>START TRANSACTION WITH CONSISTENT SNAPSHOT</c> (<c>binlog_snapshot_file/position</c>,
/// mapped to a GTID by <c>BINLOG_GTID_POS</c>); MySQL needs <c>performance_schema.log_status</c>
/// or a brief global read lock.</item>
/// </list>
/// </summary>
public sealed record ServerFlavor(string Name, bool IsMariaDb)
{
    public static ServerFlavor MariaDb { get; } = new("MariaDB", true);

    public static ServerFlavor MySql { get; } = new("MySQL", false);

    /// <summary>From <c>SELECT VERSION()</c> ("10.11.19-MariaDB-0+deb12u1-log", "8.0.36").</summary>
    public static ServerFlavor FromVersion(string versionText) =>
        versionText.Contains("MariaDB", StringComparison.OrdinalIgnoreCase) ? MariaDb : MySql;

    /// <summary>The plain version number ("10.11.19") of a <c>VERSION()</c> text.</summary>
    public static string Number(string versionText)
    {
        ArgumentNullException.ThrowIfNull(versionText);
        var end = 0;
        while (end < versionText.Length && (char.IsAsciiDigit(versionText[end]) || versionText[end] == '.'))
        {
            end++;
        }

        return versionText[..end].TrimEnd('.');
    }

    /// <summary>Why Teal does not run blue/green on this flavor yet, or null when it does.</summary>
    public string? Unsupported => IsMariaDb
        ? null
        : "MySQL is not supported yet: its GTID sets (uuid:1-N), super_read_only fence and caching_sha2_password logins differ from MariaDB's (see ARCHITECTURE.md)";
}
