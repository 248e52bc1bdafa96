using Teal.Core.Endpoints;

namespace Teal.Core.Tests.Switchover.Support;

/// <summary>An endpoint that only records what the executor asks of it (the proxy's own tests cover the sockets).</summary>
internal sealed class RecordingEndpoint(List<string> calls, bool paused = false) : IEndpoint
{
    public string Name => "ep";

    public EndpointTarget Target { get; private set; } = new("app", "127.0.0.1", 1, "app");

    public bool Paused { get; private set; } = paused;

    public EndpointStats Stats => EndpointStats.Empty;

    public Task PauseAsync(TimeSpan holdDeadline, CancellationToken cancellationToken)
    {
        Add("pause endpoint");
        Paused = true;
        return Task.CompletedTask;
    }

    public Task<EndpointDrainResult> DrainAsync(TimeSpan budget, CancellationToken cancellationToken)
    {
        Add("drain endpoint");
        return Task.FromResult(new EndpointDrainResult(0, 0));
    }

    public Task FlipAsync(EndpointTarget target, CancellationToken cancellationToken)
    {
        Target = target;
        return Task.CompletedTask;
    }

    public Task ResumeAsync(CancellationToken cancellationToken)
    {
        Add("resume endpoint");
        Paused = false;
        return Task.CompletedTask;
    }

    private void Add(string call)
    {
        lock (calls)
        {
            calls.Add(call);
        }
    }
}
