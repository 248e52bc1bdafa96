namespace Teal.Core.Secrets;

/// <summary>
/// Passwords, kept apart from the state file (a 0600 file by default). Callers hold a
/// reference (<c>instance/…</c>); values never travel through logs, events or the API.
/// </summary>
public interface ISecretStore
{
    /// <summary>The secret, or null when none is stored under <paramref name="reference"/>.</summary>
    string? Read(string reference);

    void Write(string reference, string value);

    void Remove(string reference);
}
