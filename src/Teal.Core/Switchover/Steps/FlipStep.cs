using Teal.Core.Endpoints;
using Teal.Core.Errors;
using Teal.Core.Events;
using Teal.Core.Instances;
using Teal.Core.State;

namespace Teal.Core.Switchover.Steps;

/// <summary>
/// Step 6, the point of no return: green takes blue's name, blue becomes <c>NAME-oldN</c> (and
/// stays fenced), and the endpoints route to green. The renames land in one state-store
/// transaction, so after a crash the names are either all old or all new. At a switchback the
/// same step gives the names back: the old blue takes production's name again and green the
/// name it had before the switchover.
/// </summary>
public sealed class FlipStep : ISwitchoverStep
{
    public string Name => "flip";

    public string Description => "point of no return: endpoints route to green; green takes blue's name, blue becomes NAME-oldN and stays fenced";

    public bool IsPointOfNoReturn => true;

    /// <summary>Chooses blue's new name before the journal entry, so a recovery reuses it.</summary>
    public async Task PrepareAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        if (context.Names is not null)
        {
            return;
        }

        var taken = (await context.State.ListInstancesAsync(cancellationToken)).Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var stem = context.IsSwitchback ? context.Deployment.GreenNameBeforeSwitchover ?? $"{context.BlueName}-green" : $"{context.BlueName}-old";
        var name = context.IsSwitchback && !taken.Contains(stem) ? stem : null;
        for (var n = 1; name is null; n++)
        {
            var candidate = context.IsSwitchback ? $"{stem}-{n}" : $"{stem}{n}";
            name = taken.Contains(candidate) ? null : candidate;
        }

        context.Names = new FlipNames(context.BlueName, context.GreenName, name);
    }

    public async Task ExecuteAsync(SwitchoverContext context, CancellationToken cancellationToken)
    {
        var names = context.Names ?? throw new InvalidOperationException("the flip runs only after its PrepareAsync chose the names");
        var renamedGreen = await RenameAsync(context, names.Blue, names.Green, names.BlueNewName, cancellationToken);

        // Reader endpoints spread over green's streaming readers (renamed with green by now), or go to green.
        var readers = await ReaderTargets.StreamingReadersAsync(context.State, names.Blue, cancellationToken);
        var targets = context.Endpoints.Select(e => e.Role == InstanceRole.Reader && readers.Count > 0
            ? e.FlipAsync([.. readers.Select(r => new EndpointTarget(r.Name, r.Host, r.Port, e.Target.Database))], cancellationToken)
            : e.FlipAsync(new EndpointTarget(names.Blue, renamedGreen.Host, renamedGreen.Port, e.Target.Database), cancellationToken));
        await Task.WhenAll(targets);
    }

    public void RecordOutcome(SwitchoverContext context)
    {
        if (context.Names is { } names)
        {
            context.Record(
                EventKinds.MemberRenamed,
                $"'{names.Green}' is now '{names.Blue}'; '{names.Blue}' is now '{names.BlueNewName}' and stays fenced",
                new Dictionary<string, string> { ["green"] = names.Green, ["blue"] = names.Blue, ["blueNewName"] = names.BlueNewName });
        }
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
        var readers = RenamedReaders(await context.State.ListInstancesAsync(cancellationToken), blueName, greenName, blueNewName);
        // A canary of a reader endpoint split new connections towards green's readers; once they
        // are the endpoint's route there is nothing left to split.
        var endpoints = (await context.State.ListEndpointsAsync(cancellationToken))
            .Where(e => e.Instance == blueName && e.CanaryInstance is not null)
            .Select(e => e with { CanaryInstance = null, CanaryPercent = 0 })
            .ToList();
        // Each side keeps its place in the deployment (blue stays the server that was blue at
        // create) and takes its new name; the switchover remembers green's old name for the switchback.
        string Renamed(string name) => name == blueName ? blueNewName : name == greenName ? blueName : name;
        var change = new DeploymentChange(
            context.Deployment.Id,
            d => d with
            {
                Blue = Renamed(d.Blue),
                Green = Renamed(d.Green),
                GreenNameBeforeSwitchover = context.IsSwitchback ? null : greenName,
            });
        await context.State.ApplyAsync(
            new StateChange
            {
                // Order matters: blue frees its name before green takes it.
                RenamedInstances = [(blueName, blue with { Name = blueNewName }), (greenName, renamedGreen), .. readers],
                Deployments = [change],
                Endpoints = endpoints,
                // No disk flush inside the write pause: the flip's journal entry was flushed, so
                // after a power failure recovery reruns the flip, and a lost rename is made again.
                Durable = false,
            },
            cancellationToken);
        context.Current = change.Result ?? context.Current;
        return renamedGreen;
    }

    /// <summary>
    /// Readers follow their writer: a reader named after it (<c>GREEN-r1</c>) takes the writer's
    /// new name as its stem (<c>NAME-r1</c>) and every reader points at its writer's new name. If
    /// any new name is taken, every reader keeps its name (only the writer it follows changes):
    /// the flip must not fail on a name.
    /// </summary>
    internal static IReadOnlyList<(string OldName, Instance Instance)> RenamedReaders(IReadOnlyList<Instance> instances, string blueName, string greenName, string blueNewName)
    {
        var newWriter = new Dictionary<string, string>(StringComparer.Ordinal) { [greenName] = blueName, [blueName] = blueNewName };
        var readers = instances.Where(i => i.ReaderOf is { } writer && newWriter.ContainsKey(writer)).ToList();
        if (readers.Count == 0)
        {
            return [];
        }

        string Renamed(Instance reader)
        {
            var writer = reader.ReaderOf!; // Filtered above: every reader here follows blue or green.
            return reader.Name.StartsWith(writer + "-", StringComparison.Ordinal) ? newWriter[writer] + reader.Name[writer.Length..] : reader.Name;
        }

        var moving = readers.Select(r => r.Name).Concat([blueName, greenName]).ToHashSet(StringComparer.Ordinal);
        var staying = instances.Select(i => i.Name).Where(n => !moving.Contains(n)).ToHashSet(StringComparer.Ordinal);
        var finalNames = readers.Select(Renamed).Concat([blueName, blueNewName]).ToList();
        var clash = finalNames.Count != finalNames.Distinct(StringComparer.Ordinal).Count() || finalNames.Any(staying.Contains);
        return [.. readers.Select(r => (r.Name, r with { Name = clash ? r.Name : Renamed(r), ReaderOf = newWriter[r.ReaderOf!] }))];
    }
}
