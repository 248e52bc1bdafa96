using System.Net;
using Microsoft.Extensions.Logging;
using Teal.Core.Endpoints;

namespace Teal.Proxy.Endpoints;

/// <summary>The proxy's log events (ids 2000–2099).</summary>
internal static partial class ProxyLog
{
    [LoggerMessage(EventId = 2000, Level = LogLevel.Information, Message = "Endpoint {Endpoint} listening on {Listen}, routing to {Target}")]
    public static partial void Listening(ILogger logger, string endpoint, EndPoint listen, EndpointTarget target);

    [LoggerMessage(EventId = 2001, Level = LogLevel.Information, Message = "Endpoint {Endpoint} stopped")]
    public static partial void Stopped(ILogger logger, string endpoint);

    [LoggerMessage(EventId = 2002, Level = LogLevel.Information, Message = "Endpoint {Endpoint} paused: new connections held for up to {HoldDeadline}")]
    public static partial void Paused(ILogger logger, string endpoint, TimeSpan holdDeadline);

    [LoggerMessage(EventId = 2003, Level = LogLevel.Information, Message = "Endpoint {Endpoint} drained in {ElapsedMs} ms: {ClosedIdle} closed between transactions, {ClosedAtDeadline} cut at the budget, {Moving} moving to the resumed route")]
    public static partial void Drained(ILogger logger, string endpoint, long elapsedMs, int closedIdle, int closedAtDeadline, int moving);

    [LoggerMessage(EventId = 2004, Level = LogLevel.Information, Message = "Endpoint {Endpoint} flipped: {From} -> {To}")]
    public static partial void Flipped(ILogger logger, string endpoint, EndpointTarget from, EndpointTarget to);

    [LoggerMessage(EventId = 2005, Level = LogLevel.Information, Message = "Endpoint {Endpoint} resumed: {Held} held connections proceed to {Target}")]
    public static partial void Resumed(ILogger logger, string endpoint, long held, EndpointTarget target);

    [LoggerMessage(EventId = 2006, Level = LogLevel.Warning, Message = "Endpoint {Endpoint} could not connect to {Target}: {Reason}")]
    public static partial void UpstreamConnectFailed(ILogger logger, string endpoint, EndpointTarget target, string reason);

    [LoggerMessage(EventId = 2007, Level = LogLevel.Warning, Message = "Endpoint {Endpoint}: a connection was held past the {HoldDeadline} deadline and refused")]
    public static partial void HoldExpired(ILogger logger, string endpoint, TimeSpan holdDeadline);

    [LoggerMessage(EventId = 2008, Level = LogLevel.Debug, Message = "Endpoint {Endpoint}: connection {ConnectionId} ended: {Reason}")]
    public static partial void ConnectionEnded(ILogger logger, string endpoint, long connectionId, string reason);

    [LoggerMessage(EventId = 2009, Level = LogLevel.Error, Message = "Endpoint {Endpoint}: connection {ConnectionId} failed")]
    public static partial void ConnectionFailed(ILogger logger, string endpoint, long connectionId, Exception exception);

    [LoggerMessage(EventId = 2010, Level = LogLevel.Error, Message = "Endpoint {Endpoint}: accepting connections failed")]
    public static partial void AcceptFailed(ILogger logger, string endpoint, Exception exception);

    [LoggerMessage(EventId = 2011, Level = LogLevel.Information, Message = "Endpoint {Endpoint} canary: {Percent}% of new connections to {Canary}")]
    public static partial void CanarySet(ILogger logger, string endpoint, int percent, string canary);

    // Information: where a moved session's part of the switchover's write gap went (bench/switchover reads it).
    [LoggerMessage(EventId = 2012, Level = LogLevel.Information, Message = "Endpoint {Endpoint}: connection {ConnectionId} moved to {Target} with its session state (reaching a transaction boundary {BoundaryMs:0.0} ms, reading its state {StateReadMs:0.0} ms {StateRead}, leaving {LeaveMs:0.0} ms, waiting for the route {WaitMs:0.0} ms of which {LoginsOpenedMs:0.0} ms until green's logins were back, login {LoginMs:0.0} ms started {LoginWhen}, replay {ReplayMs:0.0} ms {ReplayWhen}; going on {ReadyAfterResumeMs:0.0} ms after the resume)")]
    public static partial void SessionMoved(ILogger logger, string endpoint, long connectionId, EndpointTarget target, double boundaryMs, double stateReadMs, string stateRead, double leaveMs, double waitMs, double loginsOpenedMs, double loginMs, string loginWhen, double replayMs, string replayWhen, double readyAfterResumeMs);

    [LoggerMessage(EventId = 2013, Level = LogLevel.Information, Message = "Endpoint {Endpoint}: connection {ConnectionId} closed for the switchover instead of moved: {Reason}")]
    public static partial void SessionNotMoved(ILogger logger, string endpoint, long connectionId, string reason);

    [LoggerMessage(EventId = 2015, Level = LogLevel.Information, Message = "Endpoint {Endpoint}: logins are back on {Target}; moving sessions log in there before the resume")]
    public static partial void LoginsAhead(ILogger logger, string endpoint, EndpointTarget target);

    [LoggerMessage(EventId = 2017, Level = LogLevel.Information, Message = "Endpoint {Endpoint}: {LoggedIn} of {Sessions} active session(s) logged in on {Target} ahead of the pause, over its local socket while it is still fenced, in {ElapsedMs:0.0} ms ({Quiet} quiet one(s) log in once it opens)")]
    public static partial void LoggedInBeforePause(ILogger logger, string endpoint, int loggedIn, int sessions, int quiet, EndpointTarget target, double elapsedMs);

    [LoggerMessage(EventId = 2018, Level = LogLevel.Information, Message = "Endpoint {Endpoint}: connection {ConnectionId} could not log in on {Target} ahead of the pause over its local socket ({Reason}); it logs in once green opens")]
    public static partial void LoginBeforePauseFailed(ILogger logger, string endpoint, long connectionId, EndpointTarget target, string reason);

    [LoggerMessage(EventId = 2016, Level = LogLevel.Information, Message = "Endpoint {Endpoint}: connection {ConnectionId} could not log in on {Target} before the resume ({Reason}); it logs in at the resume")]
    public static partial void LoginAheadFailed(ILogger logger, string endpoint, long connectionId, EndpointTarget target, string reason);

    [LoggerMessage(EventId = 2019, Level = LogLevel.Information, Message = "Endpoint {Endpoint}: clients' TLS through .NET's SslStream, not OpenSSL on the event loop ({Reason}); it costs more CPU per transaction")]
    public static partial void TlsThroughSslStream(ILogger logger, string endpoint, string reason);

    [LoggerMessage(EventId = 2014, Level = LogLevel.Warning, Message = "Endpoint {Endpoint}: reading the SCRAM verifier of role {Role} on {Target} failed: {Reason}")]
    public static partial void VerifierReadFailed(ILogger logger, string endpoint, EndpointTarget target, string role, string reason);
}
