using System.Net;
using Teal.Core.Endpoints;

namespace Teal.Server;

/// <summary>Where <c>teal serve</c> keeps its files and where it listens.</summary>
/// <param name="DataDirectory">Holds <c>teal.db</c>, <c>secrets.json</c>, <c>token</c> and managed instances.</param>
public sealed record TealServerOptions(string DataDirectory)
{
    public const string DefaultListen = "127.0.0.1:7400";

    public const string DefaultServerUrl = "http://127.0.0.1:7400";

    /// <summary><c>HOST:PORT</c> for the REST API; port 0 picks a free port (tests).</summary>
    public string Listen { get; init; } = DefaultListen;

    /// <summary>
    /// <c>--endpoints external</c>: proxy endpoints are served by <c>teal proxy</c> processes only,
    /// so a restart of this server closes no client connection. Default: served in-process.
    /// </summary>
    public bool ExternalEndpoints { get; init; }

    /// <summary>How long a registered <c>teal proxy</c> may go without a heartbeat before it is dropped.</summary>
    public TimeSpan ProxySilenceLimit { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>How long a command to a <c>teal proxy</c> may take (a drain: its budget plus this) before the switchover counts it failed.</summary>
    public TimeSpan ProxyCallTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Null: the embedded SQLite file in the data directory. Otherwise a PostgreSQL connection
    /// (<c>postgresql://user@host/db</c>) that several control-plane machines share; they elect one leader.
    /// </summary>
    public string? State { get; init; }

    /// <summary>The state database's password when <see cref="State"/> holds none (<c>TEAL_STATE_PASSWORD</c>: not in a command line).</summary>
    public string? StatePassword { get; init; }

    /// <summary>The key sealing passwords in a shared state store; default <c>DATA_DIR/state.key</c>. Every control-plane machine needs the same.</summary>
    public string? StateKeyFile { get; init; }

    /// <summary>The URL other control-plane machines and clients reach this one at (default: the address it listens on).</summary>
    public string? AdvertiseUrl { get; init; }

    public string StateKeyPath => StateKeyFile ?? Path.Combine(DataDirectory, Secrets.StateKey.FileName);

    public string InstancesDirectory => Path.Combine(DataDirectory, "instances");

    public string TokenFile => Path.Combine(DataDirectory, "token");

    /// <summary><c>$TEAL_DATA_DIR</c>, else <c>/var/lib/teal</c> as root, else <c>~/.local/share/teal</c>.</summary>
    public static string DefaultDataDirectory(Func<string, string?> environment)
    {
        ArgumentNullException.ThrowIfNull(environment);
        var fromEnvironment = environment("TEAL_DATA_DIR");
        if (!string.IsNullOrEmpty(fromEnvironment))
        {
            return fromEnvironment;
        }

        return Environment.UserName == "root"
            ? "/var/lib/teal"
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".local", "share", "teal");
    }

    /// <summary>Parses <c>HOST:PORT</c> (<c>[::1]:7400</c> for IPv6; <c>localhost</c> means loopback).</summary>
    public static IPEndPoint ParseAddress(string text, string what) => ListenAddress.Parse(text, what);
}
