using System.Diagnostics.CodeAnalysis;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Teal.Core.Deployments;

/// <summary>A deployment's id: <c>bgd-</c> followed by 16 lower-case hex digits, as in RDS.</summary>
[JsonConverter(typeof(DeploymentIdJsonConverter))]
public readonly record struct DeploymentId
{
    private const string Prefix = "bgd-";

    private DeploymentId(string value) => Value = value;

    public string Value { get; }

    public static DeploymentId New() => new(Prefix + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8)));

    public static bool TryParse([NotNullWhen(true)] string? text, out DeploymentId id)
    {
        id = default;
        if (text is null || text.Length != Prefix.Length + 16 || !text.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return false;
        }

        foreach (var c in text.AsSpan(Prefix.Length))
        {
            if (!char.IsAsciiHexDigitLower(c) && !char.IsAsciiDigit(c))
            {
                return false;
            }
        }

        id = new DeploymentId(text);
        return true;
    }

    public static DeploymentId Parse(string text) =>
        TryParse(text, out var id) ? id : throw new FormatException($"'{text}' is not a deployment id (bgd- and 16 hex digits)");

    /// <summary>The 16 hex digits, used to name Teal's objects (publication, slot, subscription).</summary>
    public string Suffix => Value[Prefix.Length..];

    public override string ToString() => Value ?? string.Empty;
}

internal sealed class DeploymentIdJsonConverter : JsonConverter<DeploymentId>
{
    public override DeploymentId Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        DeploymentId.Parse(reader.GetString() ?? string.Empty);

    public override void Write(Utf8JsonWriter writer, DeploymentId value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.Value);
}
