using Teal.Core.Instances;

namespace Teal.Proxy.Endpoints;

/// <summary>The wire protocol an endpoint relays, chosen from the engine of the instance it routes to.</summary>
public enum ProxyProtocol
{
    /// <summary>PostgreSQL's frontend/backend protocol (client speaks first).</summary>
    Postgres,

    /// <summary>The MySQL client/server protocol as MariaDB speaks it (server speaks first).</summary>
    MySql,
}

public static class ProxyProtocols
{
    public static ProxyProtocol ForEngine(EngineKind engine) => engine switch
    {
        EngineKind.MariaDb => ProxyProtocol.MySql,
        _ => ProxyProtocol.Postgres,
    };
}
