using Teal.Core.Errors;
using Teal.Core.Instances;

namespace Teal.Core.Engines;

/// <summary>The engines and provisioners this Teal build has, by engine kind.</summary>
public sealed class EngineRegistry(IEnumerable<IEngine> engines, IEnumerable<IInstanceProvisioner> provisioners)
{
    private readonly Dictionary<EngineKind, IEngine> _engines = engines.ToDictionary(e => e.Kind);
    private readonly Dictionary<EngineKind, IInstanceProvisioner> _provisioners = provisioners.ToDictionary(p => p.Kind);

    public IEngine Engine(EngineKind kind) =>
        _engines.TryGetValue(kind, out var engine)
            ? engine
            : throw new TealException("engine.unsupported", $"the {kind.ToString().ToLowerInvariant()} engine is not available in this build of Teal", $"use an instance of an engine this build has: {string.Join(", ", _engines.Values.Select(e => e.Kind.DisplayName()))}");

    public IInstanceProvisioner Provisioner(EngineKind kind) =>
        _provisioners.TryGetValue(kind, out var provisioner)
            ? provisioner
            : throw new TealException("engine.unsupported", $"Teal cannot run managed {kind.ToString().ToLowerInvariant()} instances in this build", "register an existing server with `teal instance add`");

    public IReadOnlyCollection<IInstanceProvisioner> Provisioners => _provisioners.Values;
}
