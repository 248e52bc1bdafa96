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
    private readonly NpgsqlDataSource _data;
    private readonly StateKey _key;
    private readonly ConcurrentDictionary<string, string> _read = new(StringComparer.Ordinal);

    public PostgresSecretStore(PostgresStateStore store, string keyFile)
    {
        ArgumentNullException.ThrowIfNull(store);
        _data = store.DataSource;
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

        using var connection = _data.OpenConnection();
        using var command = new NpgsqlCommand("SELECT sealed FROM secrets WHERE reference = $1", connection) { Parameters = { new() { Value = reference } } };
        if (command.ExecuteScalar() is not byte[] sealedValue)
        {
            return null;
        }

        var value = _key.Open(reference, sealedValue);
        _read[reference] = value;
        return value;
    }

    public void Write(string reference, string value)
    {
        using var connection = _data.OpenConnection();
        using var command = new NpgsqlCommand("INSERT INTO secrets (reference, sealed) VALUES ($1, $2) ON CONFLICT (reference) DO UPDATE SET sealed = excluded.sealed", connection)
        {
            Parameters = { new() { Value = reference }, new() { Value = _key.Seal(reference, value) } },
        };
        command.ExecuteNonQuery();
        _read[reference] = value;
    }

    /// <summary>Stores <paramref name="value"/> unless a value is stored already; returns the stored one (the first machine's wins).</summary>
    public string WriteIfAbsent(string reference, string value)
    {
        using (var connection = _data.OpenConnection())
        using (var command = new NpgsqlCommand("INSERT INTO secrets (reference, sealed) VALUES ($1, $2) ON CONFLICT (reference) DO NOTHING", connection)
        {
            Parameters = { new() { Value = reference }, new() { Value = _key.Seal(reference, value) } },
        })
        {
            command.ExecuteNonQuery();
        }

        _read.TryRemove(reference, out _);
        return Read(reference)!; // Just stored, or stored before.
    }

    public void Remove(string reference)
    {
        using var connection = _data.OpenConnection();
        using var command = new NpgsqlCommand("DELETE FROM secrets WHERE reference = $1", connection) { Parameters = { new() { Value = reference } } };
        command.ExecuteNonQuery();
        _read.TryRemove(reference, out _);
    }

    /// <summary>
    /// The key this machine seals with, checked against the one the database was first used
    /// with: the first machine creates both; any other needs a copy of that key file.
    /// </summary>
    private StateKey OpenKey(string keyFile, string where)
    {
        var local = StateKey.Load(keyFile);
        using var connection = _data.OpenConnection();
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
