using Teal.Server.Secrets;
using Teal.Testing;

namespace Teal.Server.Tests.Secrets;

public sealed class FileSecretStoreTests
{
    private readonly string _dir = TestDirectories.NewDirectory("secrets");

    [Fact]
    public void Write_FileIsOwnerOnlyAndSurvivesReopen()
    {
        new FileSecretStore(_dir).Write("instance/a", "s3cret");

        var path = Path.Combine(_dir, FileSecretStore.FileName);
        File.GetUnixFileMode(path).ShouldBe(UnixFileMode.UserRead | UnixFileMode.UserWrite);
        new FileSecretStore(_dir).Read("instance/a").ShouldBe("s3cret");
        Directory.GetFiles(_dir).ShouldBe([path]);
    }

    [Fact]
    public void Remove_ForgetsTheSecret()
    {
        var store = new FileSecretStore(_dir);
        store.Write("instance/a", "s3cret");

        store.Remove("instance/a");

        new FileSecretStore(_dir).Read("instance/a").ShouldBeNull();
    }

    [Fact]
    public void Read_FileReference_ReadsTheOperatorsFile()
    {
        var file = Path.Combine(_dir, "pw");
        File.WriteAllText(file, "from-file\n");

        new FileSecretStore(_dir).Read("file:" + file).ShouldBe("from-file");
    }
}
