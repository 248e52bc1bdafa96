namespace Teal.Server.Secrets;

/// <summary>
/// References to secrets the operator keeps (<c>env:NAME</c>, <c>file:/path</c>): read where
/// they are, never written by Teal, whichever store holds Teal's own.
/// </summary>
internal static class OperatorSecrets
{
    public static bool TryRead(string reference, out string? value)
    {
        ArgumentNullException.ThrowIfNull(reference);
        if (reference.StartsWith("env:", StringComparison.Ordinal))
        {
            value = Environment.GetEnvironmentVariable(reference[4..]);
            return true;
        }

        if (reference.StartsWith("file:", StringComparison.Ordinal))
        {
            var file = reference[5..];
            value = File.Exists(file) ? File.ReadAllText(file).TrimEnd('\r', '\n') : null;
            return true;
        }

        value = null;
        return false;
    }
}
