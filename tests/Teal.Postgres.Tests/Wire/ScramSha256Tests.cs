using Teal.Postgres.Wire;

namespace Teal.Postgres.Tests.Wire;

/// <summary>The SCRAM-SHA-256 exchange against the worked example of RFC 7677 §3.</summary>
public sealed class ScramSha256Tests
{
    private const string ServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    [Fact]
    public void ClientMessages_Rfc7677Example_MatchTheRfc()
    {
        var scram = new ScramSha256("pencil", "rOprNGfwEbeRWgbNEkqO", "user");

        scram.ClientFirstMessage.ShouldBe("n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        scram.ClientFinalMessage(ServerFirst)
            .ShouldBe("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        Should.NotThrow(() => scram.VerifyServerFinal("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="));
    }

    [Fact]
    public void VerifyServerFinal_WrongSignature_Throws()
    {
        var scram = new ScramSha256("pencil", "rOprNGfwEbeRWgbNEkqO", "user");
        scram.ClientFinalMessage(ServerFirst);

        var error = Should.Throw<PostgresWireException>(() => scram.VerifyServerFinal("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="));

        error.SqlState.ShouldBe("28P01");
        error.Message.ShouldNotContain("pencil");
    }

    [Fact]
    public void ClientFinalMessage_NonceNotExtended_Throws()
    {
        var scram = new ScramSha256("pencil", "rOprNGfwEbeRWgbNEkqO", "user");

        Should.Throw<PostgresWireException>(() => scram.ClientFinalMessage("r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"));
    }

    [Fact]
    public void VerifyServerFinal_ServerError_ThrowsAuthenticationFailure()
    {
        var scram = new ScramSha256("pencil", "rOprNGfwEbeRWgbNEkqO", "user");
        scram.ClientFinalMessage(ServerFirst);

        Should.Throw<PostgresWireException>(() => scram.VerifyServerFinal("e=invalid-proof")).IsAuthenticationFailure.ShouldBeTrue();
    }
}
