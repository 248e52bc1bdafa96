using System.Collections.Concurrent;
using System.Text.RegularExpressions;

namespace Teal.Processes;

/// <summary>
/// The version a server binary reports for <c>--version</c>, read once per path: each engine's
/// catalog lists its installations many times (every create, every <c>teal engine list</c>).
/// </summary>
/// <param name="pattern">The version in the binary's output, as the pattern's first group.</param>
public sealed class BinaryVersions(Regex pattern)
{
    private readonly ConcurrentDictionary<string, string?> _byBinary = new();

    /// <summary>The version, or null when the binary is missing or does not say one.</summary>
    public async Task<string?> ReadAsync(string binary, CancellationToken cancellationToken)
    {
        if (_byBinary.TryGetValue(binary, out var cached))
        {
            return cached;
        }

        string? version = null;
        if (File.Exists(binary))
        {
            var result = await ProcessRunner.RunAsync(new ProcessSpec(binary, ["--version"]) { Timeout = TimeSpan.FromSeconds(10) }, cancellationToken);
            var m = pattern.Match(result.StandardOutput);
            version = result.Succeeded && m.Success ? m.Groups[1].Value : null;
        }

        _byBinary[binary] = version;
        return version;
    }
}
