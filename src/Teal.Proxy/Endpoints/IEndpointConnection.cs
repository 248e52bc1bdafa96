namespace Teal.Proxy.Endpoints;

/// <summary>
/// One proxied client connection as its endpoint sees it, whatever protocol it speaks: admitted
/// (or held) by the endpoint, drained at a transaction boundary, cut at the end of a budget.
/// </summary>
internal interface IEndpointConnection
{
    long Id { get; }

    /// <summary>Set by the endpoint, under its gate, when the connection may go upstream.</summary>
    bool Admitted { get; set; }

    /// <summary>The connection's lifetime; set once by the endpoint right after construction.</summary>
    Task Completion { get; set; }

    ConnectionOutcome Outcome { get; }

    Task RunAsync(CancellationToken stopping);

    /// <summary>
    /// Asks the connection to leave at its next transaction boundary (now, if it is there): closed,
    /// or for PostgreSQL moved to the new target at the resume. The task says how it left.
    /// </summary>
    Task<ConnectionOutcome> RequestDrain();

    /// <summary>
    /// Cuts the connection now, <see cref="ConnectionOutcome.ClosedAtDeadline"/>; the client is
    /// told why where its protocol lets the proxy speak unasked (PostgreSQL: a FATAL 57P01, as a
    /// server's own shutdown or pg_terminate_backend gives it).
    /// </summary>
    void Cut(CutReason reason);
}

/// <summary>Why the endpoint cuts an open connection.</summary>
internal enum CutReason
{
    /// <summary>Still in a transaction when the switchover's drain budget ran out.</summary>
    DrainBudgetSpent,

    /// <summary>The endpoint stops (its process shuts down, or the endpoint is deleted).</summary>
    EndpointStopping,
}
