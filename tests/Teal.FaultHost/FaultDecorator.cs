using System.Diagnostics;
using System.Globalization;
using Teal.Core.Switchover;

namespace Teal.FaultHost;

/// <summary>
/// Injects one fault into one switchover step, as named by <c>TEAL_FAULT</c>:
/// <c>crash-before:STEP</c> (SIGKILL right after the step was journaled as started, before it
/// acts), <c>crash-after:STEP</c> (SIGKILL after it acted, before it was journaled as completed),
/// <c>fail:STEP</c> (the step throws), <c>delay:STEP:SECONDS</c> (the step waits first, honouring
/// cancellation — a timeout that cannot be met).
/// </summary>
public sealed class FaultDecorator(string fault) : ISwitchoverStepDecorator
{
    private readonly string[] _parts = fault.Split(':');

    public ISwitchoverStep Decorate(ISwitchoverStep inner) =>
        _parts.Length >= 2 && _parts[1] == inner.Name ? new FaultyStep(inner, _parts) : inner;

    private sealed class FaultyStep(ISwitchoverStep inner, string[] parts) : ISwitchoverStep
    {
        public string Name => inner.Name;

        public string Description => inner.Description;

        public bool IsPointOfNoReturn => inner.IsPointOfNoReturn;

        public bool UndoReopensBlue => inner.UndoReopensBlue;

        public bool NothingToUndo => inner.NothingToUndo;

        public bool RunsWithPrevious => inner.RunsWithPrevious;

        public bool StartsWritePause => inner.StartsWritePause;

        public bool EndsWritePause => inner.EndsWritePause;

        public bool JournaledAhead => inner.JournaledAhead;

        public bool WorksAhead => inner.WorksAhead;

        public Task WorkAheadAsync(SwitchoverContext context, CancellationToken cancellationToken) => inner.WorkAheadAsync(context, cancellationToken);

        public void RecordOutcome(SwitchoverContext context) => inner.RecordOutcome(context);

        public Task PrepareAsync(SwitchoverContext context, CancellationToken cancellationToken) => inner.PrepareAsync(context, cancellationToken);

        public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
        {
            switch (parts[0])
            {
                case "crash-before":
                    Crash();
                    break;
                case "fail":
                    throw new InvalidOperationException($"injected failure in {Name}");
                case "delay":
                    await Task.Delay(TimeSpan.FromSeconds(double.Parse(parts[2], CultureInfo.InvariantCulture)), cancellationToken);
                    break;
            }

            await inner.ExecuteAsync(context, cancellationToken);
            if (parts[0] == "crash-after")
            {
                Crash();
            }
        }

        public Task UndoAsync(SwitchoverContext context, CancellationToken cancellationToken) => inner.UndoAsync(context, cancellationToken);

        private void Crash()
        {
            Console.Error.WriteLine($"fault host: killing teal serve at {parts[0]}:{Name}");
            // SIGKILL: no finally block, no shutdown hook, no flush — a real crash.
            Process.GetCurrentProcess().Kill();
        }
    }
}
