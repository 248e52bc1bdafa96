using System.Collections.Concurrent;
using Npgsql;
using Teal.Core.Errors;
using Teal.Core.Secrets;
using Teal.Server.State;

namespace Teal.Server.Secrets;

/// <summary>
/// Passwords in the shared state database, sealed with <see cref="StateKey"/> (a key file every
/// control-plane machine is given): a standby reads what the leader stored, and the database
/// never holds a password in clear. The first machine to use a state database creates the key;
/// every other one must be given a copy of that file, and is refused at start without it.
/// </summary>
/// <remarks>
/// References are written once (a new one for each password), so a value read is kept in memory:
/// the proxy's logins read the control password without a round trip to the state database.
/// </remarks>
public sealed class PostgresSecretStore : ISecretStore
{
    private readonly PostgresStateStore _store;
    private readonly StateKey _key;
    private readonly ConcurrentDictionary<string, string> _read = new(StringComparer.Ordinal);

    public PostgresSecretStore(PostgresStateStore store, string keyFile)
    {
        ArgumentNullException.ThrowIfNull(store);
        _store = store;
        _key = OpenKey(keyFile, store.Connection.ToString());
    }

    public string? Read(string reference)
    {
        if (OperatorSecrets.TryRead(reference, out var operators))
        {
            return operators;
        }

        if (_read.TryGetValue(reference, out var known))
        {
            return known;
        }

        return OffSocketThread(() => ReadStored(reference));
    }

    private string? ReadStored(string reference)
    {
        using var connection = Open();
        using var command = new NpgsqlCommand("SELECT sealed FROM secrets WHERE reference = $1", connection) { Parameters = { new() { Value = reference } } };
        if (command.ExecuteScalar() is not byte[] sealedValue)
        {
            return null;
        }

        var value = _key.Open(reference, sealedValue);
        _read[reference] = value;
        return value;
    }

    public void Write(string reference, string value) => OffSocketThread(() => WriteStored(reference, value));

    private bool WriteStored(string reference, string value)
    {
        using var connection = Open();
        using var command = new NpgsqlCommand("INSERT INTO secrets (reference, sealed) VALUES ($1, $2) ON CONFLICT (reference) DO UPDATE SET sealed = excluded.sealed", connection)
        {
            Parameters = { new() { Value = reference }, new() { Value = _key.Seal(reference, value) } },
        };
        command.ExecuteNonQuery();
        _read[reference] = value;
        return true;
    }

    /// <summary>Stores <paramref name="value"/> unless a value is stored already; returns the stored one (the first machine's wins).</summary>
    public string WriteIfAbsent(string reference, string value) => OffSocketThread(() => WriteIfAbsentStored(reference, value));

    private string WriteIfAbsentStored(string reference, string value)
    {
        using (var connection = Open())
        using (var command = new NpgsqlCommand("INSERT INTO secrets (reference, sealed) VALUES ($1, $2) ON CONFLICT (reference) DO NOTHING", connection)
        {
            Parameters = { new() { Value = reference }, new() { Value = _key.Seal(reference, value) } },
        })
        {
            command.ExecuteNonQuery();
        }

        _read.TryRemove(reference, out _);
        return ReadStored(reference)!; // Just stored, or stored before.
    }

    public void Remove(string reference) => OffSocketThread(() => RemoveStored(reference));

    private bool RemoveStored(string reference)
    {
        using var connection = Open();
        using var command = new NpgsqlCommand("DELETE FROM secrets WHERE reference = $1", connection) { Parameters = { new() { Value = reference } } };
        command.ExecuteNonQuery();
        _read.TryRemove(reference, out _);
        return true;
    }

    /// <summary>
    /// Runs a database call on a pool thread and waits for it. The proxy runs socket
    /// continuations inline on the epoll threads (ProxyRuntime), and an API request can be on one
    /// when it asks for a secret: a synchronous socket call made there waits for the very thread it
    /// blocks, and every socket it serves (the state store's included) stalls with it.
    /// </summary>
    private static T OffSocketThread<T>(Func<T> work) => Task.Run(work).GetAwaiter().GetResult();

    /// <summary>
    /// A connection of its own for each call, outside the state store's pool (whose sockets are
    /// driven asynchronously); values read are cached, so this is rare.
    /// </summary>
    private NpgsqlConnection Open()
    {
        var connection = _store.NewSessionConnection("teal-secrets");
        connection.Open();
        return connection;
    }

    /// <summary>
    /// The key this machine seals with, checked against the one the database was first used
    /// with: the first machine creates both; any other needs a copy of that key file.
    /// </summary>
    private StateKey OpenKey(string keyFile, string where)
    {
        var local = StateKey.Load(keyFile);
        using var connection = Open();
        var recorded = RecordedKeyId(connection);
        if (recorded is null)
        {
            local ??= StateKey.Create(keyFile);
            using var record = new NpgsqlCommand("INSERT INTO secret_key (id, key_id) VALUES (1, $1) ON CONFLICT (id) DO NOTHING", connection) { Parameters = { new() { Value = local.Id } } };
            record.ExecuteNonQuery();
            // Two first starts at once: the one whose key was recorded first wins.
            recorded = RecordedKeyId(connection);
        }

        if (local is null)
        {
            throw new TealException(
                "state.key-missing",
                $"the state store {where} keeps its passwords sealed with a key this machine does not have ({keyFile} is missing)",
                $"copy {StateKey.FileName} from a control-plane machine that uses this state store to {keyFile} (mode 0600), or point --state-key-file at it")
            { Kind = TealErrorKind.Unavailable };
        }

        if (local.Id != recorded)
        {
            throw new TealException(
                "state.key-mismatch",
                $"the key in {keyFile} is not the one the state store {where} seals its passwords with",
                $"copy {StateKey.FileName} from a control-plane machine that uses this state store to {keyFile}")
            { Kind = TealErrorKind.Unavailable };
        }

        return local;
    }

    private static string? RecordedKeyId(NpgsqlConnection connection)
    {
        using var command = new NpgsqlCommand("SELECT key_id FROM secret_key WHERE id = 1", connection);
        return command.ExecuteScalar() as string;
    }
}
