using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Core.Events;
using Teal.Core.Instances;
using Teal.Core.State;

namespace Teal.Core.Switchover.Steps;

/// <summary>
/// Step 6, the point of no return: green takes blue's name, blue becomes <c>NAME-oldN</c> (and
/// stays fenced), and the endpoints route to green. The renames land in one state-store
/// transaction, so after a crash the names are either all old or all new.
/// </summary>
public sealed class FlipStep : ISwitchoverStep
{
    public string Name => "flip";

    public string Description => "point of no return: endpoints route to green; green takes blue's name, blue becomes NAME-oldN and stays fenced";

    public bool IsPointOfNoReturn => true;

    /// <summary>Chooses blue's new name before the journal entry, so a recovery reuses it.</summary>
    public async Task PrepareAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        if (context.Data.ContainsKey(SwitchoverData.BlueNewName))
        {
            return;
        }

        var taken = (await context.State.ListInstancesAsync(cancellationToken)).Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var n = 1;
        while (taken.Contains($"{context.BlueName}-old{n}"))
        {
            n++;
        }

        context.Data[SwitchoverData.BlueName] = context.BlueName;
        context.Data[SwitchoverData.GreenName] = context.GreenName;
        context.Data[SwitchoverData.BlueNewName] = $"{context.BlueName}-old{n}";
    }

    public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        var blueName = context.Data[SwitchoverData.BlueName];
        var greenName = context.Data[SwitchoverData.GreenName];
        var blueNewName = context.Data[SwitchoverData.BlueNewName];

        var renamedGreen = await RenameAsync(context, blueName, greenName, blueNewName, cancellationToken);

        var targets = context.Endpoints.Select(e => e.FlipAsync(new EndpointTarget(blueName, renamedGreen.Host, renamedGreen.Port, e.Target.Database), cancellationToken));
        await Task.WhenAll(targets);
        context.Record(
            EventKinds.MemberRenamed,
            $"green '{greenName}' is now '{blueName}'; old blue is now '{blueNewName}' and stays read-only",
            new Dictionary<string, string> { ["green"] = greenName, ["blue"] = blueName, ["blueNewName"] = blueNewName });
    }

    private static async Task<Instance> RenameAsync(SwitchoverContext context, string blueName, string greenName, string blueNewName, CancellationToken cancellationToken)
    {
        var oldBlue = await context.State.GetInstanceAsync(blueNewName, cancellationToken);
        if (oldBlue is not null)
        {
            // A recovery after the rename landed: nothing to rename again.
            return await context.State.GetInstanceAsync(blueName, cancellationToken)
                ?? throw new TealException("switchover.state-inconsistent", $"instance '{blueNewName}' exists but '{blueName}' does not", "inspect `teal instance list`; the switchover journal is in teal.db");
        }

        var blue = await context.State.GetInstanceAsync(blueName, cancellationToken)
            ?? throw new TealException("switchover.state-inconsistent", $"blue instance '{blueName}' is not registered", "inspect `teal instance list`");
        var green = await context.State.GetInstanceAsync(greenName, cancellationToken)
            ?? throw new TealException("switchover.state-inconsistent", $"green instance '{greenName}' is not registered", "inspect `teal instance list`");

        var renamedGreen = green with { Name = blueName };
        var deployment = context.Current with { Blue = blueNewName, Green = blueName };
        await context.State.ApplyAsync(
            new StateChange
            {
                // Order matters: blue frees its name before green takes it.
                RenamedInstances = [(blueName, blue with { Name = blueNewName }), (greenName, renamedGreen)],
                Deployments = [deployment],
                // No disk flush inside the write pause: the flip's journal entry was flushed, so
                // after a power failure recovery reruns the flip, and a lost rename is made again.
                Durable = false,
            },
            cancellationToken);
        context.Current = deployment;
        return renamedGreen;
    }
}
