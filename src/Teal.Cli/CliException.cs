namespace Teal.Cli;

/// <summary>A refusal or user error: printed as <c>error: MESSAGE</c> and <c>hint: HINT</c>, exit code 1.</summary>
internal sealed class CliException(string message, string? hint = null, int exitCode = ExitCodes.Refused) : Exception(message)
{
    public string? Hint { get; } = hint;

    public int ExitCode { get; } = exitCode;
}

/// <summary>The CLI's exit codes (PRODUCT.md §9).</summary>
internal static class ExitCodes
{
    public const int Ok = 0;
    public const int Refused = 1;
    public const int Usage = 2;
    public const int Bug = 70;
}
