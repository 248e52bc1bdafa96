using System.Net.Sockets;

namespace Teal.Core.Errors;

/// <summary>
/// An engine's word on whether a failure of its driver may pass by itself (Npgsql's
/// <c>IsTransient</c>, a lost connection, a server shutting down). Core has no driver, so each
/// engine registers one.
/// </summary>
public interface ITransientErrorClassifier
{
    bool IsTransient(Exception exception);
}

/// <summary>Decides retry or stop for the switchover: what every engine agrees on, plus each engine's classifier.</summary>
public sealed class TransientErrors(IEnumerable<ITransientErrorClassifier> classifiers)
{
    /// <summary>Nothing but the engine-neutral rules (unit tests, hosts without engines).</summary>
    public static TransientErrors Neutral { get; } = new([]);

    public bool IsTransient(Exception exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            // A TealException not marked transient may still wrap one (a connection refused by a
            // server that is restarting): its cause decides.
            if (e is TealException { Transient: true } or IOException or SocketException or TimeoutException
                || classifiers.Any(c => c.IsTransient(e)))
            {
                return true;
            }
        }

        return false;
    }
}
