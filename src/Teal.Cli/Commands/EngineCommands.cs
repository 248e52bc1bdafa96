using System.CommandLine;
using Teal.Cli.Rendering;
using Teal.Core.Engines;

namespace Teal.Cli.Commands;

/// <summary><c>teal engine list</c>: engine versions Teal can run managed instances of.</summary>
internal static class EngineCommands
{
    public static Command Create(CliSession session)
    {
        var list = new Command("list", "List the engine versions installed on the server's machine");
        list.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Get, "/api/engines", null, ct);
            if (session.Json(parse))
            {
                session.WriteJson(body);
                return ExitCodes.Ok;
            }

            var table = new Table("ENGINE", "VERSION", "SOURCE", "BIN");
            foreach (var e in ApiClient.Parse<EngineBinaries[]>(body))
            {
                table.Add(Format.Name(e.Engine), e.Version, e.Source, e.BinDirectory);
            }

            table.WriteTo(session.Output);
            return ExitCodes.Ok;
        });
        return new Command("engine", "Engines and versions") { list };
    }
}
