using System.Globalization;
using Teal.Core.Engines;
using Teal.Core.Errors;
using Teal.Core.Guardrails;
using Teal.Core.Instances;
using Teal.Core.Secrets;
using Teal.Core.State;

namespace Teal.Core.Deployments;

/// <summary>
/// Green's readers (CREATE_TOPOLOGY): physical replicas of a managed green, each a managed
/// instance named after green (<c>GREEN-r1</c>, …) with its own slot on green. They follow green
/// through the switchover (renamed with it: <c>NAME-r1</c>) and are the targets of reader endpoints.
/// </summary>
public static class GreenTopology
{
    /// <summary>Most readers one green may have (each costs a WAL sender and a slot on green).</summary>
    public const int MaxReaders = 8;

    /// <summary>A reader is "caught up" for the switchover guardrail below this much unreplayed WAL.</summary>
    public const long MaxReaderLagBytes = 16L * 1024 * 1024;

    public static string ReaderName(string writer, int n) => $"{writer}-r{n.ToString(CultureInfo.InvariantCulture)}";

    public static string SlotName(DeploymentId id, int n) => $"teal_reader_{id.Suffix}_{n.ToString(CultureInfo.InvariantCulture)}";

    /// <summary>The readers registered for <paramref name="writer"/>, in name order.</summary>
    public static async Task<IReadOnlyList<Instance>> ReadersOfAsync(IStateStore state, string writer, CancellationToken cancellationToken) =>
        [.. (await state.ListInstancesAsync(cancellationToken)).Where(i => i.ReaderOf == writer && i.Role == InstanceRole.Reader).OrderBy(i => i.Name, StringComparer.Ordinal)];

    /// <summary>Makes the readers green still lacks (idempotent: after a restart it makes only the missing ones).</summary>
    public static async Task<IReadOnlyList<Instance>> CreateAsync(Deployment deployment, IStateStore state, ISecretStore secrets, EngineRegistry engines, DeploymentLinks links, CreateOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(deployment);
        var green = await state.GetInstanceAsync(deployment.Green, cancellationToken)
            ?? throw new TealException("deployment.green-missing", $"green '{deployment.Green}' is not registered", "delete the deployment and create it again");
        var made = new List<Instance>();
        for (var n = 1; n <= deployment.TargetReaders; n++)
        {
            var name = ReaderName(green.Name, n);
            if (await state.GetInstanceAsync(name, cancellationToken) is { } existing)
            {
                made.Add(existing);
                continue;
            }

            var control = new ConnectionInfo(green.Host, green.Port, DeploymentLinks.ControlUser, links.ControlPassword(green), deployment.Database);
            var greenPassword = links.Connection(green).Password ?? string.Empty;
            var provisioned = await engines.Provisioner(green.Engine).CreateReaderAsync(
                new ReaderRequest(name, Path.Combine(options.InstancesDirectory, name), green, control, SlotName(deployment.Id, n), greenPassword),
                cancellationToken);
            var reader = provisioned.Instance with { SecretRef = $"instance/{Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(8))}" };
            secrets.Write(reader.SecretRef!, provisioned.Password);
            // Teal's login on the reader is green's role (a physical copy): the same password.
            secrets.Write(DeploymentLinks.ControlSecretReference(reader), control.Password!);
            await state.AddInstanceAsync(reader, cancellationToken);
            made.Add(reader);
        }

        return made;
    }

    /// <summary>How <paramref name="writer"/>'s readers stream, read through the link on <paramref name="side"/>.</summary>
    public static async Task<IReadOnlyList<ReaderStatus>> ReadAsync(IStateStore state, IReplicationLink link, string writer, Side side, CancellationToken cancellationToken)
    {
        var readers = (await ReadersOfAsync(state, writer, cancellationToken)).Where(r => r.ReplicationSlot is not null).ToList();
        if (readers.Count == 0)
        {
            return [];
        }

        var streams = await link.ReadReadersAsync(side, [.. readers.Select(r => r.ReplicationSlot!)], cancellationToken);
        return [.. readers.Select(r =>
        {
            var stream = streams.FirstOrDefault(s => s.Slot == r.ReplicationSlot);
            return new ReaderStatus(r.Name, stream?.State ?? "not connected") { LagBytes = stream?.LagBytes, LagSeconds = stream?.LagSeconds, Address = r.Address, Slot = r.ReplicationSlot };
        })];
    }

    /// <summary>
    /// Green's readers read fresh for a guardrail: the slots are the deployment's own, the names
    /// those the monitor last saw (the slot's name stands in for a reader it never saw).
    /// </summary>
    public static async Task<CheckResult> CheckAsync(Deployment deployment, IReplicationLink link, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(deployment);
        ArgumentNullException.ThrowIfNull(link);
        var slots = Enumerable.Range(1, deployment.TargetReaders).Select(n => SlotName(deployment.Id, n)).ToList();
        var streams = await link.ReadReadersAsync(Side.Green, slots, cancellationToken);
        var readers = slots.Select(slot =>
        {
            var stream = streams.FirstOrDefault(s => s.Slot == slot);
            var name = deployment.Readers.FirstOrDefault(r => r.Slot == slot)?.Name ?? slot;
            return new ReaderStatus(name, stream?.State ?? "not connected") { LagBytes = stream?.LagBytes, Slot = slot };
        }).ToList();
        return Check(readers);
    }

    /// <summary>The guardrail <c>green.readers</c>: every reader of green streams and is nearly caught up.</summary>
    public static CheckResult Check(IReadOnlyList<ReaderStatus> readers)
    {
        var behind = readers.Where(r => r.State != "streaming" || (r.LagBytes ?? long.MaxValue) > MaxReaderLagBytes).ToList();
        if (behind.Count == 0)
        {
            return CheckResult.Pass("green.readers", $"{readers.Count} reader(s) of green streaming: {string.Join(", ", readers.Select(r => $"{r.Name} ({r.LagBytes ?? 0} bytes behind)"))}");
        }

        var first = behind[0];
        var what = string.Join("; ", behind.Select(r => r.State == "streaming" ? $"{r.Name} is {r.LagBytes} bytes behind" : $"{r.Name} is not streaming ({r.State})"));
        return CheckResult.Fail(
            "green.readers",
            $"green's readers are not ready: {what}",
            first.State == "streaming"
                ? "wait for the reader to catch up (`teal show` lists its lag), then switch over"
                : $"start {first.Name} again (a restart of `teal serve` starts every managed instance) and read its server.log: the reader endpoint moves to green's readers at the switchover");
    }

    /// <summary>Removes green's readers (before a switchover: they were made for this deployment), slots included.</summary>
    public static async Task<IReadOnlyList<string>> RemoveAsync(Deployment deployment, IStateStore state, ISecretStore secrets, EngineRegistry engines, DeploymentLinks links, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(deployment);
        var green = await state.GetInstanceAsync(deployment.Green, cancellationToken);
        var removed = new List<string>();
        foreach (var reader in await ReadersOfAsync(state, deployment.Green, cancellationToken))
        {
            if (reader.Managed is null || reader.ReplicationSlot is null)
            {
                continue;
            }

            ConnectionInfo? control = green is null ? null : new ConnectionInfo(green.Host, green.Port, DeploymentLinks.ControlUser, links.ControlPassword(green), deployment.Database);
            await engines.Provisioner(reader.Engine).RemoveReaderAsync(reader, control, cancellationToken);
            await state.RemoveInstanceAsync(reader.Name, cancellationToken);
            if (reader.SecretRef is not null)
            {
                secrets.Remove(reader.SecretRef);
            }

            secrets.Remove(DeploymentLinks.ControlSecretReference(reader));
            removed.Add(reader.Name);
        }

        return removed;
    }
}
