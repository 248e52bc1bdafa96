using System.Data.Common;
using System.Globalization;
using System.Text.Json;
using Teal.Core.Deployments;
using Teal.Core.Events;
using Teal.Core.State;
using Teal.Server.Json;

namespace Teal.Server.State;

/// <summary>
/// Rows as both state stores read them: the same columns in the same order give the same
/// records, whichever database holds them.
/// </summary>
internal static class StateRows
{
    /// <summary>Events from <c>SELECT seq, time, deployment_id, kind, message, data</c>.</summary>
    public static async Task<IReadOnlyList<DeploymentEvent>> ReadEventsAsync(DbCommand command, string where, CancellationToken cancellationToken)
    {
        var events = new List<DeploymentEvent>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            DeploymentId? id = reader.IsDBNull(2) ? null : DeploymentId.Parse(reader.GetString(2));
            events.Add(new DeploymentEvent(reader.GetInt64(0), DateTimeOffset.Parse(reader.GetString(1), CultureInfo.InvariantCulture), id, reader.GetString(3), reader.GetString(4))
            {
                Data = FromJson<Dictionary<string, string>>(reader.GetString(5), where),
            });
        }

        return events;
    }

    /// <summary>Journal entries from <c>SELECT seq, data</c>.</summary>
    public static async Task<IReadOnlyList<JournalEntry>> ReadJournalAsync(DbCommand command, string where, CancellationToken cancellationToken)
    {
        var entries = new List<JournalEntry>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            entries.Add(FromJson<JournalEntry>(reader.GetString(1), where) with { Seq = reader.GetInt64(0) });
        }

        return entries;
    }

    /// <summary>Records stored as JSON in the first column.</summary>
    public static async Task<IReadOnlyList<T>> ReadJsonAsync<T>(DbCommand command, string where, CancellationToken cancellationToken)
    {
        var items = new List<T>();
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            items.Add(FromJson<T>(reader.GetString(0), where));
        }

        return items;
    }

    /// <summary>A record from its JSON; <paramref name="where"/> names the store in the error ("the state file").</summary>
    public static T FromJson<T>(string json, string where) =>
        JsonSerializer.Deserialize<T>(json, TealJson.Options) ?? throw new InvalidDataException($"a {typeof(T).Name} row in {where} holds null");
}
