using Npgsql;
using Teal.Core.Endpoints;
using Teal.Proxy.Sessions;
using static Teal.Proxy.Tests.Endpoints.ProxyServersFixture;

namespace Teal.Proxy.Tests.Endpoints;

/// <summary>
/// With an auth query the proxy checks SCRAM passwords itself, against the verifier the server
/// stores, and logs in to the server with the client's proof; other logins go to the server.
/// </summary>
[Collection(ProxyServersGroup.Name)]
public sealed class ProxyAuthTests(ProxyServersFixture servers)
{
    [Fact]
    public async Task TheProxyJudgesThePassword_AgainstTheVerifierItsAuthQueryReads()
    {
        // The auth query answers with the verifier of another password than the server's: what
        // the proxy accepts and refuses shows that the proxy, not the server, checked it.
        var otherVerifier = await VerifierOfAsync("proxy-side-password");
        await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: new FixedVerifier(otherVerifier));

        var refused = await Should.ThrowAsync<PostgresException>(OpenAsync(endpoint, AppUser, AppPassword));
        refused.SqlState.ShouldBe(PostgresErrorCodes.InvalidPassword);
        refused.MessageText.ShouldBe($"password authentication failed for user \"{AppUser}\"");

        // Accepted by the proxy, whose proof then cannot log in to a server with another verifier.
        var serverRefused = await Should.ThrowAsync<PostgresException>(OpenAsync(endpoint, AppUser, "proxy-side-password"));
        serverRefused.SqlState.ShouldBe(PostgresErrorCodes.InvalidAuthorizationSpecification);
        serverRefused.MessageText.ShouldContain("could not log in to instance blue");
        (await EventuallyAsync(() => endpoint.Stats.Active == 0)).ShouldBeTrue();
    }

    [Fact]
    public async Task ChangedPassword_CountsAtTheNextLogin()
    {
        await servers.Blue.ExecuteAsync("drop role if exists rotating; create role rotating login password 'first-password'");
        try
        {
            await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
            await using (var first = await OpenAsync(endpoint, "rotating", "first-password"))
            {
                (await ScalarAsync<string>(first, "select current_user")).ShouldBe("rotating");
            }

            await servers.Blue.ExecuteAsync("alter role rotating password 'second-password'");

            var error = await Should.ThrowAsync<PostgresException>(OpenAsync(endpoint, "rotating", "first-password"));
            error.SqlState.ShouldBe(PostgresErrorCodes.InvalidPassword);
            await using var second = await OpenAsync(endpoint, "rotating", "second-password");
            (await ScalarAsync<string>(second, "select current_user")).ShouldBe("rotating");
        }
        finally
        {
            NpgsqlConnection.ClearAllPools();
            await servers.Blue.ExecuteAsync("drop role if exists rotating");
        }
    }

    [Fact]
    public async Task Md5AndTrustLogins_AreLeftToTheServer_AndMissingRolesGetItsError()
    {
        var hba = Path.Combine(servers.Blue.Server.Directory, "data", "pg_hba.conf");
        var original = await File.ReadAllTextAsync(hba);
        await servers.Blue.ExecuteAsync("drop role if exists md5_user; drop role if exists trust_user");
        await servers.Blue.ExecuteAsync("set password_encryption = 'md5'; create role md5_user login password 'md5-password'");
        await servers.Blue.ExecuteAsync("create role trust_user login");
        await File.WriteAllTextAsync(hba, "host all md5_user 127.0.0.1/32 md5\nhost all trust_user 127.0.0.1/32 trust\n" + original);
        await servers.Blue.ExecuteAsync("select pg_reload_conf()");
        try
        {
            await using var endpoint = StartEndpoint(servers.BlueTarget, verifiers: servers.Verifiers);
            await using (var md5 = await OpenAsync(endpoint, "md5_user", "md5-password"))
            {
                (await ScalarAsync<string>(md5, "select current_user")).ShouldBe("md5_user");
            }

            await using (var trust = await OpenAsync(endpoint, "trust_user", null))
            {
                (await ScalarAsync<string>(trust, "select current_user")).ShouldBe("trust_user");
            }

            var wrongMd5 = await Should.ThrowAsync<PostgresException>(OpenAsync(endpoint, "md5_user", "wrong"));
            wrongMd5.SqlState.ShouldBe(PostgresErrorCodes.InvalidPassword);
            var missing = await Should.ThrowAsync<PostgresException>(OpenAsync(endpoint, "no_such_role", "whatever"));
            missing.SqlState.ShouldBe(PostgresErrorCodes.InvalidPassword);
            missing.MessageText.ShouldBe("password authentication failed for user \"no_such_role\"");
        }
        finally
        {
            await File.WriteAllTextAsync(hba, original);
            await servers.Blue.ExecuteAsync("select pg_reload_conf()");
            NpgsqlConnection.ClearAllPools();
            await servers.Blue.ExecuteAsync("drop role if exists md5_user; drop role if exists trust_user");
        }
    }

    private async Task<string> VerifierOfAsync(string password)
    {
        await servers.Blue.ExecuteAsync($"drop role if exists verifier_source; create role verifier_source password '{password}'");
        var verifier = await servers.Blue.ScalarAsync<string>("select rolpassword from pg_authid where rolname = 'verifier_source'");
        await servers.Blue.ExecuteAsync("drop role verifier_source");
        return verifier;
    }

    private async Task<NpgsqlConnection> OpenAsync(Proxy.Endpoints.ProxyEndpoint endpoint, string user, string? password)
    {
        var builder = new NpgsqlConnectionStringBuilder(Through(endpoint, servers.Blue)) { Username = user, Password = password, Pooling = false };
        var connection = new NpgsqlConnection(builder.ConnectionString);
        try
        {
            await connection.OpenAsync();
            return connection;
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
    }

    private sealed class FixedVerifier(string verifier) : IScramVerifierSource
    {
        public Task<string?> ReadAsync(EndpointTarget target, string role, CancellationToken cancellationToken) => Task.FromResult<string?>(verifier);
    }
}
