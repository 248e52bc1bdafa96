using Microsoft.Extensions.Logging;
using Teal.Core.Endpoints;

namespace Teal.Postgres.PgBouncer;

/// <summary>The PgBouncer endpoint's log lines (event ids 4200–4219). Never the admin password.</summary>
internal static partial class PgBouncerLog
{
    [LoggerMessage(EventId = 4200, Level = LogLevel.Information, Message = "Endpoint {Endpoint}: PgBouncer paused database {Database} in {ElapsedMs} ms; held clients wait up to {HeldClientTimeout} (query_wait_timeout)")]
    public static partial void Paused(ILogger logger, string endpoint, string database, long elapsedMs, string heldClientTimeout);

    [LoggerMessage(EventId = 4201, Level = LogLevel.Warning, Message = "Endpoint {Endpoint}: PgBouncer's query_wait_timeout ({HeldClientTimeout}) is shorter than the hold deadline ({HoldDeadline}): clients held longer get PgBouncer's error first")]
    public static partial void HeldClientTimeoutShort(ILogger logger, string endpoint, string heldClientTimeout, TimeSpan holdDeadline);

    [LoggerMessage(EventId = 4202, Level = LogLevel.Warning, Message = "Endpoint {Endpoint}: PAUSE of {Database} did not complete ({Reason}); resumed it")]
    public static partial void PauseAbandoned(ILogger logger, string endpoint, string database, string reason);

    [LoggerMessage(EventId = 4203, Level = LogLevel.Error, Message = "Endpoint {Endpoint}: could not resume {Database} after an abandoned PAUSE; run RESUME {Database} on PgBouncer's console")]
    public static partial void ResumeAfterAbandonFailed(ILogger logger, Exception exception, string endpoint, string database);

    [LoggerMessage(EventId = 4204, Level = LogLevel.Information, Message = "Endpoint {Endpoint}: PgBouncer database {Database} now points at {Target} (was {Previous}), in {ElapsedMs} ms")]
    public static partial void Flipped(ILogger logger, string endpoint, string database, EndpointTarget target, EndpointTarget previous, long elapsedMs);

    [LoggerMessage(EventId = 4205, Level = LogLevel.Error, Message = "Endpoint {Endpoint}: after RELOAD PgBouncer still points {Database} at {Live}, not {Target}; restored the previous ini")]
    public static partial void ReloadNotApplied(ILogger logger, string endpoint, string database, string live, EndpointTarget target);

    [LoggerMessage(EventId = 4206, Level = LogLevel.Information, Message = "Endpoint {Endpoint}: PgBouncer resumed database {Database}")]
    public static partial void Resumed(ILogger logger, string endpoint, string database);

    [LoggerMessage(EventId = 4207, Level = LogLevel.Warning, Message = "Endpoint {Endpoint}: {Servers} server connection(s) of {Database} still open after the drain budget ({Clients} client(s) in session or in a transaction); the fence ends them on the server")]
    public static partial void DrainLeftServers(ILogger logger, string endpoint, string database, long servers, long clients);

    [LoggerMessage(EventId = 4208, Level = LogLevel.Warning, Message = "Endpoint {Endpoint}: PgBouncer runs {Database} in {PoolMode} pooling: PAUSE waits until every session client disconnects")]
    public static partial void NotTransactionPooling(ILogger logger, string endpoint, string database, string poolMode);

    [LoggerMessage(EventId = 4209, Level = LogLevel.Information, Message = "Endpoint {Endpoint}: {Database} was not paused; RESUME had nothing to do")]
    public static partial void ResumeNotPaused(ILogger logger, string endpoint, string database);
}
