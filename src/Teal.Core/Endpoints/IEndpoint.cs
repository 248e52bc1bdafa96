namespace Teal.Core.Endpoints;

/// <summary>
/// A live endpoint the switchover drives. The four operations keep their meaning across
/// endpoint kinds: Teal's proxy implements them on its sockets, PgBouncer through its console.
/// </summary>
public interface IEndpoint
{
    string Name { get; }

    EndpointTarget Target { get; }

    /// <summary>Every server new connections go to in turn (a reader endpoint's readers); <see cref="Target"/> alone otherwise.</summary>
    IReadOnlyList<EndpointTarget> Targets => [Target];

    /// <summary>A reader endpoint's canary: the servers (green's readers) that take its share of new connections in turn; empty without one.</summary>
    IReadOnlyList<EndpointTarget> CanaryTargets => [];

    /// <summary>
    /// Sends <paramref name="percent"/>% of new connections to <paramref name="targets"/> in turn
    /// (none or 0 ends the split). Endpoints without a canary of their own ignore it (a
    /// <c>teal proxy</c> gets its canary from the route table).
    /// </summary>
    Task SetCanaryAsync(IReadOnlyList<EndpointTarget> targets, int percent, CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Writer endpoints move to green at the flip; reader endpoints to green's readers (to green
    /// itself when it has none).
    /// </summary>
    Instances.InstanceRole Role => Instances.InstanceRole.Writer;

    /// <summary>Whether new connections are being held.</summary>
    bool Paused { get; }

    /// <summary>
    /// What <see cref="PauseAsync"/> needs that holds no client — reading settings, checking the
    /// entry, opening a connection — done while clients still run, so that the pause is a single
    /// action. Changes nothing; pausing without it, or preparing twice, is allowed.
    /// </summary>
    Task PrepareAsync(TimeSpan holdDeadline, CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// Before the pause, while clients still run, green still fenced: an endpoint on this machine
    /// may log in on <paramref name="target"/> through <paramref name="socket"/> (where green
    /// admits Teal's own OS user, <see cref="Engines.IReplicationLink.FencedLoginSocketAsync"/>)
    /// for the sessions it will move, so that the pause has no login left to wait for. Nothing of
    /// a client's reaches green before the resume; logins that a resume to that server does not
    /// use are closed. Returns once they are in, or after a short wait.
    /// </summary>
    Task LogInBeforePauseAsync(EndpointTarget target, string socket, CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>
    /// From now on new connections are held, not refused. A connection held longer than
    /// <paramref name="holdDeadline"/> gets a clear error naming the endpoint.
    /// </summary>
    Task PauseAsync(TimeSpan holdDeadline, CancellationToken cancellationToken);

    /// <summary>
    /// Existing connections may finish the transaction they are in, within
    /// <paramref name="budget"/>; then they are closed. Returns how many ended each way.
    /// </summary>
    Task<EndpointDrainResult> DrainAsync(TimeSpan budget, CancellationToken cancellationToken);

    /// <summary>Routes new connections (including held ones, once resumed) to <paramref name="target"/>.</summary>
    Task FlipAsync(EndpointTarget target, CancellationToken cancellationToken);

    /// <summary>
    /// Routes new connections over <paramref name="targets"/> in turn (a reader endpoint over
    /// green's readers). Endpoints that route to one server only take the first.
    /// </summary>
    Task FlipAsync(IReadOnlyList<EndpointTarget> targets, CancellationToken cancellationToken) => FlipAsync(targets[0], cancellationToken);

    /// <summary>
    /// The side the endpoint was flipped to accepts logins again (the switchover released its
    /// fence and is finishing the rest of opening it); clients are still held. An endpoint may
    /// now log in there what it moves (Teal's proxy: the sessions it moves, so that at the resume
    /// only their state is left to replay), as long as nothing of a client's reaches that side
    /// before <see cref="ResumeAsync"/>. Returns at once; endpoints with nothing to prepare keep this default.
    /// </summary>
    Task LoginsOpenAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Held connections proceed to the current target; new ones are routed again.</summary>
    Task ResumeAsync(CancellationToken cancellationToken);

    EndpointStats Stats { get; }
}

/// <summary>Connections that closed at a transaction boundary versus those cut at the end of the budget.</summary>
public sealed record EndpointDrainResult(int ClosedIdle, int ClosedAtDeadline)
{
    /// <summary>Sessions that left the drained side between transactions with their state, to go on on the resumed route.</summary>
    public int Moving { get; init; }
}
