using Microsoft.Extensions.Time.Testing;
using Teal.Core.Switchover;

namespace Teal.Core.Tests.Switchover;

/// <summary>A step that records what happens to it and fails, waits or advances the fake clock as told.</summary>
internal sealed class RecordingStep(string name, List<string> calls) : ISwitchoverStep
{
    private int _failed;
    private int _undoFailed;

    public string Name => name;

    public string Description => name;

    public bool PointOfNoReturn { get; init; }

    public bool WithPrevious { get; init; }

    public bool Pauses { get; init; }

    public bool Resumes { get; init; }

    public bool Undoless { get; init; }

    public bool Ahead { get; init; }

    /// <summary>Work done ahead (<see cref="ISwitchoverStep.WorksAhead"/>): recorded as "ahead NAME", then this runs.</summary>
    public Func<Task>? WorkAhead { get; init; }

    /// <summary>How many times execute fails, and with what.</summary>
    public int Failures { get; init; }

    public Func<Exception> Failure { get; init; } = () => new InvalidOperationException("broke");

    /// <summary>How many times undo fails (an IOException, as a server that does not answer), and what runs on each failure.</summary>
    public int UndoFailures { get; init; }

    public Action? OnUndoFailure { get; init; }

    /// <summary>Waits on the (fake) clock until cancelled: a step the timeout must stop.</summary>
    public bool Hangs { get; init; }

    /// <summary>Advances the fake clock by this much while it runs (its duration, without a real delay).</summary>
    public TimeSpan Takes { get; init; }

    public FakeTimeProvider? Clock { get; init; }

    /// <summary>The event kind its outcome records (as sync-sequences, flip and open-green do).</summary>
    public string? Outcome { get; init; }

    /// <summary>Called when the step starts; returns once its partner has started too.</summary>
    public Func<Task>? Meet { get; init; }

    public int Attempts { get; private set; }

    bool ISwitchoverStep.IsPointOfNoReturn => PointOfNoReturn;

    bool ISwitchoverStep.RunsWithPrevious => WithPrevious;

    bool ISwitchoverStep.StartsWritePause => Pauses;

    bool ISwitchoverStep.EndsWritePause => Resumes;

    bool ISwitchoverStep.NothingToUndo => Undoless;

    bool ISwitchoverStep.JournaledAhead => Ahead;

    bool ISwitchoverStep.WorksAhead => WorkAhead is not null;

    async Task ISwitchoverStep.WorkAheadAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        Add("ahead " + name);
        await WorkAhead!();
        Add("ahead done " + name);
    }

    public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        Add("do " + name);
        Attempts++;
        if (Meet is not null)
        {
            await Meet();
        }

        if (Takes > TimeSpan.Zero)
        {
            Clock!.Advance(Takes);
        }

        if (Hangs)
        {
            await Task.Delay(TimeSpan.FromHours(1), context.Time, cancellationToken);
        }

        if (_failed < Failures)
        {
            _failed++;
            throw Failure();
        }
    }

    public Task UndoAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        Add("undo " + name);
        if (_undoFailed < UndoFailures)
        {
            _undoFailed++;
            OnUndoFailure?.Invoke();
            throw new IOException($"undoing {name} broke");
        }

        return Task.CompletedTask;
    }

    public void RecordOutcome(SwitchoverContext context)
    {
        if (Outcome is not null)
        {
            context.Record(Outcome, $"{name} done");
        }
    }

    private void Add(string call)
    {
        lock (calls)
        {
            calls.Add(call);
        }
    }
}
