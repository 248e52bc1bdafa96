using Teal.Processes;

namespace Teal.Processes.Tests;

/// <summary>What a child process is given: its environment carries secrets, its command line (world-readable in /proc) never.</summary>
public sealed class ProcessRunnerTests
{
    private const string Secret = "Env-Secret-7f3a9";

    [Fact]
    public async Task RunAs_EnvironmentValueReachesTheProgramButNoCommandLine()
    {
        // The program prints its parent's command line (runuser's, when Teal is root), its own,
        // and the variable: what ps shows of both processes, and what the program received.
        var spec = new ProcessSpec("/bin/sh", ["-c", "tr '\\0' ' ' < /proc/$PPID/cmdline; echo; tr '\\0' ' ' < /proc/$$/cmdline; echo; echo \"got=$TEAL_TEST_SECRET\""])
        {
            RunAs = "postgres",
            Environment = new Dictionary<string, string> { ["TEAL_TEST_SECRET"] = Secret },
        };

        var result = await ProcessRunner.RunAsync(spec, CancellationToken.None);

        result.Succeeded.ShouldBeTrue(result.StandardError);
        var lines = result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines[^1].ShouldBe($"got={Secret}");
        if (ProcessRunner.IsRoot)
        {
            lines[0].ShouldStartWith("/usr/sbin/runuser -u postgres -- /bin/sh");
        }

        lines[0].ShouldNotContain(Secret);
        lines[1].ShouldNotContain(Secret);
    }

    [Fact]
    public void StartInfo_RunAs_PutsEnvironmentInTheEnvironmentOnly()
    {
        var spec = new ProcessSpec("/usr/bin/pg_dump", ["--host", "db"])
        {
            RunAs = "postgres",
            Environment = new Dictionary<string, string> { ["PGPASSWORD"] = Secret },
        };

        var info = ProcessRunner.StartInfo(spec);

        info.ArgumentList.ShouldNotContain(a => a.Contains(Secret, StringComparison.Ordinal));
        info.FileName.ShouldNotContain(Secret);
        info.Environment["PGPASSWORD"].ShouldBe(Secret);
    }
}
