using System.Net.Sockets;
using Teal.Core.Errors;

namespace Teal.Core.Tests.Switchover;

/// <summary>What the executor retries after the point of no return, and what stops it.</summary>
public sealed class TransientErrorsTests
{
    [Fact]
    public void IsTransient_ConnectionLossAndMarkedRefusals_AreTransient()
    {
        var errors = TransientErrors.Neutral;

        errors.IsTransient(new IOException("reset")).ShouldBeTrue();
        errors.IsTransient(new SocketException()).ShouldBeTrue();
        errors.IsTransient(new TealException("x.unreachable", "green cannot be reached") { Transient = true }).ShouldBeTrue();
        errors.IsTransient(new TealException("connection.unreachable", "green: cannot connect", null, new InvalidOperationException("wrapped", new SocketException()))).ShouldBeTrue();
    }

    [Fact]
    public void IsTransient_BugsAndPlainRefusals_ArePermanent()
    {
        var errors = TransientErrors.Neutral;

        errors.IsTransient(new InvalidOperationException("a bug")).ShouldBeFalse();
        errors.IsTransient(new TealException("switchover.state-inconsistent", "instance missing")).ShouldBeFalse();
    }

    [Fact]
    public void IsTransient_EngineClassifierSaysSo_IsTransient()
    {
        var errors = new TransientErrors([new Classifier()]);

        errors.IsTransient(new ArithmeticException("engine-specific")).ShouldBeTrue();
        errors.IsTransient(new InvalidOperationException("wraps it", new ArithmeticException())).ShouldBeTrue();
        errors.IsTransient(new InvalidOperationException("a bug")).ShouldBeFalse();
    }

    private sealed class Classifier : ITransientErrorClassifier
    {
        public bool IsTransient(Exception exception) => exception is ArithmeticException;
    }
}
