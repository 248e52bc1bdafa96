using Teal.Core.Endpoints;

namespace Teal.Core.Switchover.Steps;

/// <summary>Step 2: new client connections are held, not refused, until the endpoints resume.</summary>
public sealed class PauseEndpointsStep : ISwitchoverStep
{
    public string Name => "pause-endpoints";

    public bool StartsWritePause => true;

    public string Description => "pause the endpoints: new client connections are held, not refused";

    /// <summary>
    /// Opens the sessions the rest of the plan needs and lets every endpoint prepare its pause
    /// (a PgBouncer reads its settings and opens its console connection; Teal's proxy reads its
    /// sessions' state and, where green admits it while fenced, logs them in there) now, while
    /// clients still write: the pause then starts with the pause itself.
    /// </summary>
    public Task PrepareAsync(SwitchoverContext context, CancellationToken cancellationToken) =>
        Task.WhenAll([
            context.Link.WarmUpAsync(cancellationToken),
            LogInBeforePauseAsync(context, cancellationToken),
            .. context.Endpoints.Select(e => e.PrepareAsync(HoldDeadline(context), cancellationToken))]);

    /// <summary>Writer endpoints log their sessions in on green now, when green admits Teal's OS user while fenced.</summary>
    private static async Task LogInBeforePauseAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        if (await context.Link.FencedLoginSocketAsync(cancellationToken) is not { } socket
            || await context.State.GetInstanceAsync(context.GreenName, cancellationToken) is not { } green)
        {
            return;
        }

        await Task.WhenAll(context.Endpoints
            .Where(e => e.Role == Instances.InstanceRole.Writer)
            .Select(e => e.LogInBeforePauseAsync(new EndpointTarget(green.Name, green.Host, green.Port, e.Target.Database), socket, cancellationToken)));
    }

    public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        var holdDeadline = HoldDeadline(context);
        // A PgBouncer PAUSE returns only once every transaction in flight has ended: that wait is
        // the endpoint's drain, so it gets the drain budget, not the whole switchover timeout.
        using var budget = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        budget.CancelAfter(context.Options.DrainBudget + TimeSpan.FromSeconds(1));
        try
        {
            await Task.WhenAll(context.Endpoints.Select(e => e.PauseAsync(holdDeadline, budget.Token)));
        }
        catch (OperationCanceledException) when (budget.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new Errors.TealException(
                "switchover.pause-timeout",
                $"the endpoints could not pause within the drain budget of {context.Options.DrainBudget.TotalSeconds:0.#} s: a transaction through them stayed open",
                $"find the long transaction on blue ({context.Link.OpenTransactionsQuery}) or give a larger --drain-budget");
        }
    }

    public Task UndoAsync(SwitchoverContext context, CancellationToken cancellationToken) =>
        Task.WhenAll(context.Endpoints.Select(e => e.ResumeAsync(cancellationToken)));

    // Held connections may wait for the rest of the switchover, plus the drain budget the
    // roll-forward may still need; past that they get the endpoint's clear error.
    internal static TimeSpan HoldDeadline(SwitchoverContext context) => Max(context.Remaining, TimeSpan.Zero) + context.Options.DrainBudget + TimeSpan.FromSeconds(1);

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;
}

/// <summary>
/// Step 3a: connections already open through the endpoints finish the transaction they are in,
/// then are closed. Done before blue is fenced so that a client of the endpoint never sees
/// blue's read-only error — it sees a clean disconnect between transactions and reconnects into
/// the held queue.
/// </summary>
public sealed class DrainEndpointsStep : ISwitchoverStep
{
    public bool NothingToUndo => true;

    public string Name => "drain-endpoints";

    public string Description => "close endpoint connections between transactions (in-flight ones get the drain budget)";

    public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        var results = await Task.WhenAll(context.Endpoints.Select(e => e.DrainAsync(context.Options.DrainBudget, cancellationToken)));
        var idle = results.Sum(r => r.ClosedIdle);
        var cut = results.Sum(r => r.ClosedAtDeadline);
        var moving = results.Sum(r => r.Moving);
        context.Record(
            Events.EventKinds.SwitchoverPhase,
            $"endpoints drained: {moving} session(s) moving with their state, {idle} connection(s) closed between transactions, {cut} cut at the end of the drain budget",
            new Dictionary<string, string>
            {
                ["moving"] = moving.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["closedIdle"] = idle.ToString(System.Globalization.CultureInfo.InvariantCulture),
                ["closedAtDeadline"] = cut.ToString(System.Globalization.CultureInfo.InvariantCulture),
            });
    }
}

/// <summary>Step 8: held connections proceed, now to green.</summary>
public sealed class ResumeEndpointsStep : ISwitchoverStep
{
    public string Name => "resume-endpoints";

    public bool EndsWritePause => true;

    public string Description => "resume the endpoints: held connections proceed to green";

    public Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken) =>
        Task.WhenAll(context.Endpoints.Select(e => e.ResumeAsync(cancellationToken)));
}
