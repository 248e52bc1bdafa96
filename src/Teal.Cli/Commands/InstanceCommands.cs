using System.CommandLine;
using Teal.Cli.Rendering;
using Teal.Core.Instances;
using Teal.Server.Api;

namespace Teal.Cli.Commands;

/// <summary><c>teal instance add|create|list|url|unfence|rotate-password|remove</c>: the servers Teal knows.</summary>
internal static class InstanceCommands
{
    public static Command Create(CliSession session) =>
        new("instance", "Database servers: register existing ones, create managed ones")
        {
            Add(session),
            CreateManaged(session),
            List(session),
            Url(session),
            Unfence(session),
            RotatePassword(session),
            Remove(session),
        };

    private static Command Add(CliSession session)
    {
        var name = new Argument<string>("NAME") { Description = "Name for the instance (lower-case letters, digits, dashes)" };
        var connection = new Option<string>("--connection") { Description = $"Connection string: postgresql://user@host:port/db or host=… port=… user=… dbname=…; mysql://user@host:port/db for MariaDB; {PasswordOptions.ArgvWarning(string.Empty)}", Required = true };
        var endpoint = EndpointOption();
        var password = new PasswordOptions(string.Empty, "the server's");
        var command = new Command("add", "Register an existing server (Teal probes it first)") { name, connection, endpoint };
        password.AddTo(command);
        command.SetAction(async (parse, ct) => await AddAsync(
            session,
            parse,
            new AddInstanceRequest(parse.GetValue(name)!) { Connection = parse.GetValue(connection), Engine = EngineOf(parse.GetValue(connection)), Password = await password.ReadAsync(parse, session, ct), Endpoint = parse.GetValue(endpoint) },
            ct));
        return command;
    }

    private static Command CreateManaged(CliSession session)
    {
        var name = new Argument<string>("NAME") { Description = "Name for the instance (also its directory under DATA_DIR/instances)" };
        var engine = new Option<string>("--engine") { Description = "Engine to run", DefaultValueFactory = _ => "postgres" };
        engine.AcceptOnlyFromAmong("postgres", "mariadb");
        var version = new Option<string>("--version") { Description = "Engine version (15, 17, 17.10; MariaDB 10.11; see `teal engine list`)", Required = true };
        var port = new Option<int?>("--port") { Description = "Port to listen on (default: a free one)" };
        var parameters = Verb.ServerSettings("--parameter", "Server setting KEY=VALUE (repeatable)");
        var endpoint = EndpointOption();
        var command = new Command("create", "Create and start a managed server (listens on loopback)") { name, engine, version, port, parameters, endpoint };
        command.SetAction((parse, ct) => AddAsync(
            session,
            parse,
            new AddInstanceRequest(parse.GetValue(name)!)
            {
                Engine = parse.GetValue(engine) == "mariadb" ? EngineKind.MariaDb : EngineKind.Postgres,
                Version = parse.GetValue(version),
                Port = parse.GetValue(port),
                Parameters = Verb.ToDictionary(parse.GetValue(parameters)),
                Endpoint = parse.GetValue(endpoint),
            },
            ct));
        return command;
    }

    private static Command List(CliSession session)
    {
        var command = new Command("list", "List instances (never their passwords)");
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Get, "/api/instances", null, ct);
            if (session.Json(parse))
            {
                session.WriteJson(body);
                return ExitCodes.Ok;
            }

            var table = new Table("NAME", "ENGINE", "VERSION", "HOST", "PORT", "USER", "DATABASE", "ROLE", "MANAGED");
            foreach (var i in ApiClient.Parse<InstanceView[]>(body))
            {
                table.Add(i.Name, Format.Name(i.Engine), i.Version, i.Host, i.Port.ToString(System.Globalization.CultureInfo.InvariantCulture), i.User, i.Database, Format.Name(i.Role), i.Managed ? "yes" : "no");
            }

            table.WriteTo(session.Output);
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Url(CliSession session)
    {
        var name = new Argument<string>("NAME");
        var throughEndpoint = new Option<bool>("--endpoint") { Description = "The address of the instance's endpoint instead of the server's" };
        var asTeal = new Option<bool>("--as-teal")
        {
            Description = "As Teal's own login, the one a fenced instance accepts: to stage DDL on green or look at a fenced old blue (PostgreSQL: SET default_transaction_read_only = off to write). Never give it to applications",
        };
        var command = new Command("url", "Print a connection URI with the password: postgresql://… (psql \"$(teal instance url NAME)\") or mysql://… for MariaDB") { name, throughEndpoint, asTeal };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var query = new List<string>();
            if (parse.GetValue(throughEndpoint))
            {
                query.Add("endpoint=true");
            }

            if (parse.GetValue(asTeal))
            {
                query.Add("as=teal");
            }

            var path = $"/api/instances/{Uri.EscapeDataString(parse.GetValue(name)!)}/url" + (query.Count > 0 ? "?" + string.Join('&', query) : string.Empty);
            var body = await api.SendAsync(HttpMethod.Get, path, null, ct);
            if (session.Json(parse))
            {
                session.WriteJson(body);
            }
            else
            {
                await session.Output.WriteLineAsync(ApiClient.Parse<InstanceUrl>(body).Url);
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Unfence(CliSession session)
    {
        var name = new Argument<string>("NAME");
        var command = new Command("unfence", "Lift Teal's fence from an instance (an old blue after a switchover): LOGIN back to exactly the roles it took it from") { name };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Post, $"/api/instances/{Uri.EscapeDataString(parse.GetValue(name)!)}/unfence", null, ct);
            if (session.Json(parse))
            {
                session.WriteJson(body);
            }
            else
            {
                var unfenced = ApiClient.Parse<InstanceUnfenced>(body);
                await session.Output.WriteLineAsync($"{unfenced.Name} unfenced; LOGIN given back to: {(unfenced.Roles.Count == 0 ? "(no role)" : string.Join(", ", unfenced.Roles))}");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command RotatePassword(CliSession session)
    {
        var name = new Argument<string>("NAME");
        var command = new Command("rotate-password", "Give Teal's own login (teal_control) on an instance a new password; the replication that logs in with it follows") { name };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Post, $"/api/instances/{Uri.EscapeDataString(parse.GetValue(name)!)}/rotate-password", null, ct);
            if (session.Json(parse))
            {
                session.WriteJson(body);
            }
            else
            {
                var rotated = ApiClient.Parse<ControlPasswordRotated>(body);
                await session.Output.WriteLineAsync($"Teal's login on {rotated.Name} has a new password; replication followed it in: {(rotated.Deployments.Count == 0 ? "(no deployment)" : string.Join(", ", rotated.Deployments))}");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Remove(CliSession session)
    {
        var name = new Argument<string>("NAME");
        var deleteData = new Option<bool>("--delete-data") { Description = "Managed instance: stop the server and delete its files" };
        var command = new Command("remove", "Forget an instance (a managed one needs --delete-data)") { name, deleteData };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var instance = parse.GetValue(name)!;
            await api.SendAsync(HttpMethod.Delete, $"/api/instances/{Uri.EscapeDataString(instance)}" + (parse.GetValue(deleteData) ? "?delete-data=true" : string.Empty), null, ct);
            if (!session.Json(parse))
            {
                await session.Output.WriteLineAsync($"instance {instance} removed");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    /// <summary>The engine a connection string is for: <c>mysql://</c>, <c>mariadb://</c> and <c>Server=…</c> settings are MariaDB's.</summary>
    private static EngineKind EngineOf(string? connection) =>
        connection is not null && (connection.StartsWith("mysql://", StringComparison.OrdinalIgnoreCase) || connection.StartsWith("mariadb://", StringComparison.OrdinalIgnoreCase) || connection.TrimStart().StartsWith("Server=", StringComparison.OrdinalIgnoreCase))
            ? EngineKind.MariaDb
            : EngineKind.Postgres;

    private static Option<string?> EndpointOption() =>
        new("--endpoint") { Description = "HOST:PORT: also create a proxy endpoint named after the instance, listening there" };

    private static async Task<int> AddAsync(CliSession session, ParseResult parse, AddInstanceRequest request, CancellationToken ct)
    {
        using var api = session.Client(parse);
        var body = await api.SendAsync(HttpMethod.Post, "/api/instances", request, ct);
        if (session.Json(parse))
        {
            session.WriteJson(body);
            return ExitCodes.Ok;
        }

        var i = ApiClient.Parse<InstanceView>(body);
        var how = i.Managed ? $"created in {i.Directory}" : "registered";
        await session.Output.WriteLineAsync($"instance {i.Name} {how}: {Format.Name(i.Engine)} {i.Version} on {i.Host}:{i.Port}, user {i.User}, database {i.Database}");
        if (request.Endpoint is not null)
        {
            await session.Output.WriteLineAsync($"endpoint {i.Name} listens on {request.Endpoint}");
        }

        return ExitCodes.Ok;
    }
}
