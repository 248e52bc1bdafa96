using System.Text.Json;
using System.Text.Json.Serialization;
using Teal.Core.Endpoints;
using Teal.Core.Instances;

namespace Teal.Server.Json;

/// <summary>
/// The one JSON shape of Teal's records, shared by the state file, the REST API and the CLI so a
/// field has the same name everywhere: web defaults (camelCase), enums as strings.
/// </summary>
public static class TealJson
{
    public static JsonSerializerOptions Options { get; } = Create(indented: false);

    /// <summary>The same shape, indented (the CLI's <c>--output json</c>).</summary>
    public static JsonSerializerOptions Indented { get; } = Create(indented: true);

    /// <summary>Applies Teal's settings to options owned by someone else (ASP.NET's).</summary>
    public static void Configure(JsonSerializerOptions options)
    {
        // Names operators type on the command line stay lower-case ("postgres", "proxy",
        // "writer"); lifecycle names are RDS's (PROVISIONING, COPY_DATA, REVERSE_REPLICATING).
        options.Converters.Add(new JsonStringEnumConverter<EngineKind>(LowerCase.Instance, allowIntegerValues: false));
        options.Converters.Add(new JsonStringEnumConverter<EndpointKind>(LowerCase.Instance, allowIntegerValues: false));
        options.Converters.Add(new JsonStringEnumConverter<InstanceRole>(LowerCase.Instance, allowIntegerValues: false));
        options.Converters.Add(new JsonStringEnumConverter<ServerTlsMode>(JsonNamingPolicy.KebabCaseLower, allowIntegerValues: false));
        options.Converters.Add(new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseUpper, allowIntegerValues: false));
    }

    private static JsonSerializerOptions Create(bool indented)
    {
        var options = new JsonSerializerOptions(JsonSerializerDefaults.Web) { WriteIndented = indented };
        Configure(options);
        options.MakeReadOnly(populateMissingResolver: true);
        return options;
    }

    private sealed class LowerCase : JsonNamingPolicy
    {
        public static LowerCase Instance { get; } = new();

        public override string ConvertName(string name) => name.ToLowerInvariant();
    }
}
