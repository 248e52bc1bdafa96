using Teal.Core.Errors;
using Teal.Processes;
using Teal.Core.Secrets;
using Teal.Server.Secrets;
using Teal.Server.Tests.Support;
using Teal.Testing;

namespace Teal.Server.Tests.Hosting;

/// <summary>The data directory and the files in it that hold secrets or state: owner only, from their creation.</summary>
public sealed class DataDirectoryTests
{
    private const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    private const UnixFileMode GroupOrOther = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    /// <summary>0700; as root 0711: the managed servers' users (one per engine) must reach instances/.</summary>
    private static readonly UnixFileMode Expected = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | (ProcessRunner.IsRoot ? UnixFileMode.OtherExecute : 0);

    [Fact]
    public async Task NewDataDirectory_IsOwnerOnly_AndItsFilesToo()
    {
        var directory = Path.Combine(TestDirectories.NewDirectory("data"), "teal");

        await using (var teal = await TealHost.StartAsync(directory))
        {
            new FileSecretStore(directory).Write("instance/test", "Secret-Pw-1");

            File.GetUnixFileMode(directory).ShouldBe(Expected);
            File.GetUnixFileMode(Path.Combine(directory, "token")).ShouldBe(OwnerOnly);
            File.GetUnixFileMode(Path.Combine(directory, "teal.db")).ShouldBe(OwnerOnly);
            File.GetUnixFileMode(Path.Combine(directory, "secrets.json")).ShouldBe(OwnerOnly);
            foreach (var file in Directory.EnumerateFiles(directory, "teal.db-*"))
            {
                (File.GetUnixFileMode(file) & GroupOrOther).ShouldBe((UnixFileMode)0, file);
            }
        }
    }

    [Fact]
    public async Task ExistingTealDirectoryOpenToOthers_IsNarrowed()
    {
        var directory = TestDirectories.NewDirectory("data");
        File.SetUnixFileMode(directory, File.GetUnixFileMode(directory) | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        await File.WriteAllTextAsync(Path.Combine(directory, "token"), "0123456789abcdef\n");
        File.SetUnixFileMode(Path.Combine(directory, "token"), OwnerOnly | UnixFileMode.GroupRead | UnixFileMode.OtherRead);

        await using var teal = await TealHost.StartAsync(directory);

        File.GetUnixFileMode(directory).ShouldBe(Expected);
        File.GetUnixFileMode(Path.Combine(directory, "token")).ShouldBe(OwnerOnly);
        teal.Token.ShouldBe("0123456789abcdef");
    }

    [Fact]
    public void SharedDirectoryOpenToOthers_IsRefusedAndLeftAsItWas()
    {
        var directory = TestDirectories.NewDirectory("shared");
        File.WriteAllText(Path.Combine(directory, "notes.txt"), "someone else's");
        var wide = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;
        File.SetUnixFileMode(directory, wide);

        var refused = Should.Throw<TealException>(() => TealServer.Build(new TealServerOptions(directory) { Listen = "127.0.0.1:0" }));

        refused.Code.ShouldBe("server.data-dir-shared");
        refused.Message.ShouldContain("0755");
        refused.Hint.ShouldNotBeNull().ShouldContain("--data-dir");
        File.GetUnixFileMode(directory).ShouldBe(wide);
        File.Exists(Path.Combine(directory, "token")).ShouldBeFalse();
    }

    [Fact]
    public void PrivateFile_WriteNew_IsOwnerOnlyWhateverTheUmask_AndReplacesAnExistingWideFile()
    {
        var path = Path.Combine(TestDirectories.NewDirectory("private"), "pwfile");
        File.WriteAllText(path, "old");
        File.SetUnixFileMode(path, OwnerOnly | UnixFileMode.OtherRead);

        PrivateFile.WriteNew(path, "Secret-Pw-2\n");

        File.GetUnixFileMode(path).ShouldBe(OwnerOnly);
        File.ReadAllText(path).ShouldBe("Secret-Pw-2\n");
    }

    [Fact]
    public void PrivateFile_Replace_LeavesNoTemporaryFileAndIsOwnerOnly()
    {
        var directory = TestDirectories.NewDirectory("private");
        var path = Path.Combine(directory, "token");

        PrivateFile.Replace(path, "a");
        PrivateFile.Replace(path, "b");

        File.ReadAllText(path).ShouldBe("b");
        File.GetUnixFileMode(path).ShouldBe(OwnerOnly);
        Directory.EnumerateFiles(directory).ShouldBe([path]);
    }
}
