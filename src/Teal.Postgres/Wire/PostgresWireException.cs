namespace Teal.Postgres.Wire;

/// <summary>
/// An ErrorResponse from the server (or PgBouncer), with its SQLSTATE. The message is the
/// server's own text; the client never adds the password or other secrets to it.
/// </summary>
public sealed class PostgresWireException : Exception
{
    public PostgresWireException(string severity, string sqlState, string message, string? detail = null, string? hint = null)
        : base(message)
    {
        Severity = severity;
        SqlState = sqlState;
        Detail = detail;
        Hint = hint;
    }

    public PostgresWireException()
        : this("ERROR", "XX000", "server error")
    {
    }

    public PostgresWireException(string message)
        : this("ERROR", "XX000", message)
    {
    }

    public PostgresWireException(string message, Exception innerException)
        : base(message, innerException)
    {
        Severity = "ERROR";
        SqlState = "XX000";
    }

    public string Severity { get; }

    /// <summary>SQLSTATE: <c>28P01</c> bad password, <c>08P01</c> protocol violation (PgBouncer's "not allowed"), …</summary>
    public string SqlState { get; }

    public string? Detail { get; }

    public string? Hint { get; }

    /// <summary>Whether the login was refused for its credentials (wrong password, unknown user).</summary>
    /// <remarks>PgBouncer answers every refusal with 08P01, so its wording is the only signal there.</remarks>
    public bool IsAuthenticationFailure =>
        SqlState is "28P01" or "28000"
        || (SqlState == "08P01" && Message.Contains("authentication failed", StringComparison.OrdinalIgnoreCase));
}
