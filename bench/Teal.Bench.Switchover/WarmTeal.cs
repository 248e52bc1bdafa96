using System.Diagnostics;
using System.Text.RegularExpressions;
using Teal.Testing.Processes;

namespace Teal.Bench.Switchover;

/// <summary>
/// <c>teal serve</c> and <c>teal proxy</c> as operators run them: with the code warm-up the test
/// harness turns off (<see cref="TealProcess.WarmUpOff"/>), and waited for before anything is
/// timed. An operator's serve has run for hours before the switchover, so its first switchover
/// compiles only what the warm-up cannot reach; timed without it, round 1 measured the JIT.
/// </summary>
internal static partial class WarmTeal
{
    private static readonly TimeSpan WarmUpTimeout = TimeSpan.FromMinutes(2);

    public static async Task<TealProcess> StartServeAsync(Action<string> log, IReadOnlyList<string>? serveArguments = null)
    {
        var teal = await TealProcess.StartAsync(environment: TealProcess.WarmUpOn, serveArguments: serveArguments);
        log($"teal serve: {await WarmedUpAsync(() => teal.Log, "teal serve")}");
        return teal;
    }

    public static async Task<TealProxyProcess> StartProxyAsync(TealProcess server, string name, IReadOnlyList<string>? listen = null)
    {
        var proxy = await TealProxyProcess.StartAsync(server, name, listen, environment: TealProcess.WarmUpOn);
        await WarmedUpAsync(() => proxy.Log, $"teal proxy {name}");
        return proxy;
    }

    /// <summary>The warm-up's own line ("Compiled N methods ahead of use in M ms") once it is in the log.</summary>
    private static async Task<string> WarmedUpAsync(Func<string> log, string what)
    {
        var waited = Stopwatch.StartNew();
        while (waited.Elapsed < WarmUpTimeout)
        {
            if (WarmedUp().Match(log()) is { Success: true } line)
            {
                return line.Value;
            }

            if (WarmUpStopped().IsMatch(log()))
            {
                throw new InvalidOperationException($"{what}: the code warm-up did not finish:\n{log()}");
            }

            await Task.Delay(100);
        }

        throw new TimeoutException($"{what}: no code warm-up line in {WarmUpTimeout.TotalSeconds:0} s:\n{log()}");
    }

    [GeneratedRegex(@"Compiled \d+ methods ahead of use in \d+ ms")]
    private static partial Regex WarmedUp();

    [GeneratedRegex(@"Code warm-up (stopped|off)")]
    private static partial Regex WarmUpStopped();
}
