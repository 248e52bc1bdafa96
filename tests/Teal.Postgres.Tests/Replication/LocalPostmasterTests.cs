using Teal.Postgres.Replication;

namespace Teal.Postgres.Tests.Replication;

/// <summary>
/// The drain sends SIGTERM to a postmaster's children only when the server is the one running
/// here: the postmaster.pid the server read must be the file on this machine, pid, data
/// directory and start time alike. A server elsewhere whose pid happens to be taken here by an
/// unrelated process is left alone.
/// </summary>
public sealed class LocalPostmasterTests : IDisposable
{
    private readonly string _dataDirectory = Directory.CreateTempSubdirectory("teal-postmaster-").FullName;

    [Fact]
    public void TheSameFileOnThisMachine_IsThisServersPostmaster()
    {
        var pidFile = PidFile(Environment.ProcessId, startTime: "1796500000");
        File.WriteAllText(Path.Combine(_dataDirectory, "postmaster.pid"), pidFile);

        LocalPostmaster.Find(pidFile).ShouldNotBeNull().Pid.ShouldBe(Environment.ProcessId);
    }

    [Fact]
    public void AnotherStartTime_ADataDirectoryNotHere_OrNoFile_IsAServerElsewhere()
    {
        File.WriteAllText(Path.Combine(_dataDirectory, "postmaster.pid"), PidFile(Environment.ProcessId, startTime: "1796500000"));

        LocalPostmaster.Find(PidFile(Environment.ProcessId, startTime: "1796500001")).ShouldBeNull("restarted, or another server at the same path elsewhere");
        LocalPostmaster.Find(PidFile(Environment.ProcessId, "1796500000", "/nonexistent/teal-data")).ShouldBeNull();
        LocalPostmaster.Find(null).ShouldBeNull("no superuser to read it");
        LocalPostmaster.Find("garbage").ShouldBeNull();
    }

    private string PidFile(int pid, string startTime, string? dataDirectory = null) =>
        $"{pid}\n{dataDirectory ?? _dataDirectory}\n{startTime}\n5432\n/tmp\n127.0.0.1\n  1234567     32768\nready   \n";

    public void Dispose() => Directory.Delete(_dataDirectory, recursive: true);
}
