namespace Teal.Core.Deployments;

/// <summary>
/// A deployment's links held by one caller (<see cref="DeploymentLinks.HoldAsync"/>): links may
/// be read and forgotten through it; disposing it lets the next holder in.
/// </summary>
public sealed class LinkHold : IAsyncDisposable
{
    private readonly DeploymentLinks _links;
    private readonly DeploymentId _id;
    private SemaphoreSlim? _gate;

    internal LinkHold(DeploymentLinks links, DeploymentId id, SemaphoreSlim gate)
    {
        _links = links;
        _id = id;
        _gate = gate;
    }

    public DeploymentId Id => _id;

    /// <summary>Forgets and closes the links of both directions.</summary>
    public async Task ForgetAsync()
    {
        await ForgetAsync(reversed: false);
        await ForgetAsync(reversed: true);
    }

    /// <summary>Forgets and closes the link of one direction.</summary>
    public Task ForgetAsync(bool reversed)
    {
        ObjectDisposedException.ThrowIf(_gate is null, this);
        return _links.ForgetHeldAsync(_id, reversed);
    }

    public ValueTask DisposeAsync()
    {
        // Released once, however often disposed: a second release would let two holders in.
        Interlocked.Exchange(ref _gate, null)?.Release();
        return ValueTask.CompletedTask;
    }
}
