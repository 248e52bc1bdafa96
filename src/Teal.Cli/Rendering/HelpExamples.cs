using System.CommandLine;

namespace Teal.Cli.Rendering;

/// <summary>
/// Examples shown by <c>teal VERB --help</c>, after the verb's description (System.CommandLine
/// prints the description first; the examples are part of it, so help needs no custom layout).
/// </summary>
internal static class HelpExamples
{
    private static readonly Dictionary<string, string[]> Examples = new(StringComparer.Ordinal)
    {
        ["serve"] = ["teal serve --data-dir /var/lib/teal --listen 127.0.0.1:7400", "teal serve   # then open http://127.0.0.1:7400/ (dashboard) and /metrics"],
        ["proxy"] = ["teal proxy --data-dir /var/lib/teal --name p1   # beside `teal serve --endpoints external`", "teal proxy --server http://10.0.0.5:7400 --token-file /etc/teal/token --name p2 --admin-listen 10.0.0.6:7401", "teal proxy --server http://10.0.0.5:7400 --server http://10.0.0.7:7400 --token-file /etc/teal/token   # leader and standby (--state postgresql://…): follows whichever leads", "kill -TERM PID   # stop accepting, let sessions end (start the replacement first)"],
        ["instance add"] = ["teal instance add app --connection postgresql://postgres:PW@db1:5432/app --endpoint 0.0.0.0:6432", "teal instance add shop --connection mysql://root:PW@db2:3306/shop --endpoint 0.0.0.0:3307"],
        ["instance create"] = ["teal instance create app --engine postgres --version 15 --endpoint 127.0.0.1:6432", "teal instance create shop --engine mariadb --version 10.11 --endpoint 127.0.0.1:3307"],
        ["create"] = ["teal create upgrade --source app --target-engine-version 17 --wait", "teal create upgrade --source app --target-engine-version 17 --target-parameter work_mem=64MB --tag team=payments"],
        ["show"] = ["teal show upgrade", "teal show upgrade --watch", "teal show upgrade --output json | jq .replication.lagSeconds"],
        ["check"] = ["teal check upgrade", "teal check upgrade --switchover-timeout 30"],
        ["verify"] = ["teal verify upgrade"],
        ["switchover"] = ["teal switchover upgrade --dry-run", "teal switchover upgrade --switchover-timeout 60 --wait"],
        ["switchback"] = ["teal switchback upgrade --dry-run", "teal switchback upgrade --wait   # back to the old blue; then `teal switchover` again"],
        ["finish"] = ["teal finish upgrade   # keep green; then `teal instance unfence app-old1`"],
        ["delete"] = ["teal delete upgrade", "teal delete upgrade --delete-target"],
        ["events"] = ["teal events", "teal events upgrade --follow", "teal events upgrade --follow --output json   # one JSON event per line"],
        ["endpoint add"] = ["teal endpoint add app --instance app --listen 0.0.0.0:6432"],
        ["webhook add"] = ["teal webhook add https://hooks.example.com/teal --secret \"$WEBHOOK_SECRET\""],
        ["demo"] = ["teal demo", "teal demo --stop"],
    };

    /// <summary>Appends the examples to each verb that has some.</summary>
    public static void AddTo(Command root)
    {
        ArgumentNullException.ThrowIfNull(root);
        Visit(root, string.Empty);
    }

    private static void Visit(Command command, string path)
    {
        foreach (var sub in command.Subcommands)
        {
            var subPath = path.Length == 0 ? sub.Name : $"{path} {sub.Name}";
            if (Examples.TryGetValue(subPath, out var lines))
            {
                sub.Description += Environment.NewLine + Environment.NewLine + "Examples:" + Environment.NewLine + string.Join(Environment.NewLine, lines.Select(l => "  " + l));
            }

            Visit(sub, subPath);
        }
    }
}
