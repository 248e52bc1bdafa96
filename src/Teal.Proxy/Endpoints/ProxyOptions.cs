using System.Security.Cryptography.X509Certificates;
using Teal.Core.Endpoints;

namespace Teal.Proxy.Endpoints;

/// <summary>Settings of Teal's proxy listeners, shared by every endpoint of one <c>teal serve</c>.</summary>
public sealed record ProxyOptions
{
    /// <summary>Bytes per direction per connection. 16 KiB holds two of PostgreSQL's 8 KiB sends, so COPY streams in few reads.</summary>
    public int BufferSize { get; init; } = 16 * 1024;

    /// <summary>How long connecting to the instance may take before the client gets an error.</summary>
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>How long a client may take to send its startup packet; guards against idle sockets piling up.</summary>
    public TimeSpan StartupTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Pending-accept queue. Sized for bursts of hundreds of clients reconnecting after a switchover.</summary>
    public int Backlog { get; init; } = 1024;

    /// <summary>Most client connections one endpoint serves at once (active, held or logging in); 0 for no cap.</summary>
    public int MaxConnections { get; init; }

    /// <summary>Shown to clients that ask for TLS (SSLRequest); without one the proxy answers 'N'.</summary>
    public X509Certificate2? Certificate { get; init; }

    /// <summary>Refuse clients that do not ask for TLS (28000), as a <c>hostssl</c>-only pg_hba.conf does.</summary>
    public bool RequireTls { get; init; }

    /// <summary>TLS to the servers, as libpq's sslmode. prefer, as libpq: servers with ssl = off (MariaDB: without a certificate) go on in plain text.</summary>
    public ServerTlsMode ServerTls { get; init; } = ServerTlsMode.Prefer;

    /// <summary>Roots verify-full trusts; empty or null for the system's.</summary>
    public X509Certificate2Collection? ServerTlsRoots { get; init; }

    /// <summary>
    /// SO_REUSEPORT on the listeners, so that a second process can listen on the same address
    /// beside this one (<c>teal proxy</c>'s replacement without closing a session); the kernel
    /// spreads new connections over both until the old one stops accepting.
    /// </summary>
    public bool ReusePort { get; init; }

    public void Validate()
    {
        if (BufferSize < 1024)
        {
            throw new ArgumentOutOfRangeException(nameof(BufferSize), BufferSize, "the proxy buffer must be at least 1 KiB");
        }

        if (ConnectTimeout <= TimeSpan.Zero || StartupTimeout <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(ConnectTimeout), "proxy timeouts must be positive");
        }

        if (RequireTls && Certificate is null)
        {
            throw new ArgumentException("an endpoint that requires TLS needs a certificate", nameof(RequireTls));
        }

        if (MaxConnections < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxConnections), MaxConnections, "the connection cap cannot be negative");
        }

        if (Backlog < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(Backlog), Backlog, "the accept backlog must be positive");
        }
    }
}
