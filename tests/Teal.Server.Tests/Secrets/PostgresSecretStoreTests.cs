using System.Text;
using Teal.Core.Errors;
using Teal.Server.Secrets;
using Teal.Server.State;
using Teal.Testing;

namespace Teal.Server.Tests.Secrets;

/// <summary>Passwords in a shared PostgreSQL state store: sealed with the key file every control-plane machine is given.</summary>
public sealed class PostgresSecretStoreTests(Postgres15Fixture fixture) : IClassFixture<Postgres15Fixture>, IAsyncLifetime
{
    private readonly string _database = "secrets_" + Guid.NewGuid().ToString("N")[..12];
    private readonly string _dir = TestDirectories.NewDirectory("statekey");

    private string KeyFile => Path.Combine(_dir, StateKey.FileName);

    public Task InitializeAsync() => fixture.Server.ExecuteAsync($"CREATE DATABASE {_database}");

    public Task DisposeAsync() => Task.CompletedTask;

    [Fact]
    public async Task Write_StoredSealed_KeyFileOwnerOnly_ReadBackByAnotherMachineWithTheKey()
    {
        NewStore(KeyFile).Write("instance/a", "s3cret-password");

        File.GetUnixFileMode(KeyFile).ShouldBe(UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var stored = await fixture.Server.ScalarAsync<byte[]>("SELECT sealed FROM teal.secrets WHERE reference = 'instance/a'", _database);
        Encoding.UTF8.GetString(stored).ShouldNotContain("s3cret");
        // A second machine, given a copy of the key file.
        var copy = Path.Combine(TestDirectories.NewDirectory("statekey"), StateKey.FileName);
        File.Copy(KeyFile, copy);
        NewStore(copy).Read("instance/a").ShouldBe("s3cret-password");
    }

    [Fact]
    public void Open_SecondMachineWithoutTheKey_RefusedNamingTheFileToCopy()
    {
        NewStore(KeyFile).Write("instance/a", "s3cret");
        var missing = Path.Combine(TestDirectories.NewDirectory("statekey"), StateKey.FileName);

        var ex = Should.Throw<TealException>(() => NewStore(missing));

        ex.Code.ShouldBe("state.key-missing");
        ex.Hint!.ShouldContain(missing);
        File.Exists(missing).ShouldBeFalse();
    }

    [Fact]
    public void Open_SecondMachineWithAnotherKey_Refused()
    {
        NewStore(KeyFile);
        var other = Path.Combine(TestDirectories.NewDirectory("statekey"), StateKey.FileName);
        StateKey.Create(other);

        Should.Throw<TealException>(() => NewStore(other)).Code.ShouldBe("state.key-mismatch");
    }

    [Fact]
    public void SealedValue_MovedToAnotherReference_DoesNotOpen()
    {
        var key = StateKey.Create(KeyFile);
        var sealedValue = key.Seal("instance/a", "s3cret");

        key.Open("instance/a", sealedValue).ShouldBe("s3cret");
        Should.Throw<System.Security.Cryptography.CryptographicException>(() => key.Open("instance/b", sealedValue));
    }

    [Fact]
    public void WriteIfAbsent_FirstValueWins_RemoveForgets()
    {
        var store = NewStore(KeyFile);

        store.WriteIfAbsent("server/token", "first").ShouldBe("first");
        store.WriteIfAbsent("server/token", "second").ShouldBe("first");
        store.Remove("server/token");

        NewStore(KeyFile).Read("server/token").ShouldBeNull();
    }

    private PostgresSecretStore NewStore(string keyFile) =>
        new(new PostgresStateStore(fixture.Server.Uri(_database), null, TimeProvider.System, new EventSignal()), keyFile);
}
