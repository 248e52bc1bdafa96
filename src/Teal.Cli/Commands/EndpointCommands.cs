using System.CommandLine;
using System.Globalization;
using Teal.Cli.Rendering;
using Teal.Core.Endpoints;
using Teal.Server;
using Teal.Server.Api;

namespace Teal.Cli.Commands;

/// <summary><c>teal endpoint add|remove|list</c>: where applications connect.</summary>
internal static class EndpointCommands
{
    public static Command Create(CliSession session) =>
        new("endpoint", "Endpoints: stable addresses applications connect to; switchover moves them")
        {
            Add(session),
            Remove(session),
            List(session),
            Canary(session),
        };

    private static Command Add(CliSession session)
    {
        var name = new Argument<string>("NAME");
        var instance = new Option<string>("--instance") { Description = "Instance the endpoint routes to", Required = true };
        var listen = new Option<string?>("--listen") { Description = "Teal's proxy: HOST:PORT to listen on" };
        var pgBouncer = new Option<string?>("--pgbouncer") { Description = "A PgBouncer you run: HOST:PORT of its admin console" };
        var adminUser = new Option<string>("--admin-user") { Description = "PgBouncer: a user in admin_users (password from $TEAL_PGBOUNCER_PASSWORD)", DefaultValueFactory = _ => "pgbouncer" };
        var database = new Option<string?>("--database") { Description = "PgBouncer: the [databases] entry applications use" };
        var config = new Option<string?>("--config") { Description = "PgBouncer: its ini file, which Teal rewrites at switchover" };
        var maxConnections = new Option<int>("--max-connections") { Description = "Teal's proxy: most client connections at once; more get SQLSTATE 53300 (0: no cap)" };
        var tlsCertificate = new Option<string?>("--tls-cert") { Description = "Teal's proxy: PEM certificate for TLS clients (default: the one Teal generates in its data directory)" };
        var tlsKey = new Option<string?>("--tls-key") { Description = "Teal's proxy: the PEM private key of --tls-cert" };
        var requireTls = new Option<bool>("--require-tls") { Description = "Teal's proxy: refuse clients that do not use TLS" };
        var serverTls = new Option<string>("--server-tls") { Description = "Teal's proxy: TLS to the servers (PostgreSQL and MariaDB), as libpq's sslmode: disable, prefer, require or verify-full", DefaultValueFactory = _ => "prefer" };
        serverTls.AcceptOnlyFromAmong("disable", "prefer", "require", "verify-full");
        var serverTlsRoot = new Option<string?>("--server-tls-root") { Description = "Teal's proxy, --server-tls verify-full: PEM file of the CA certificates to trust (default: the system's)" };
        var role = new Option<bool>("--reader") { Description = "Teal's proxy: a reader endpoint (routes to the instance's readers; at switchover to green's readers)" };
        var command = new Command("add", "Declare an endpoint: --listen for Teal's proxy, or --pgbouncer for a PgBouncer you run") { name, instance, listen, pgBouncer, adminUser, database, config, maxConnections, tlsCertificate, tlsKey, requireTls, serverTls, serverTlsRoot, role };
        command.Validators.Add(result =>
        {
            var proxy = result.GetValue(listen) is not null;
            var bouncer = result.GetValue(pgBouncer) is not null;
            if (proxy == bouncer)
            {
                result.AddError("give either --listen HOST:PORT (Teal's proxy) or --pgbouncer HOST:PORT");
            }
            else if (bouncer && (result.GetValue(database) is null || result.GetValue(config) is null))
            {
                result.AddError("--pgbouncer needs --database and --config");
            }
            else if ((result.GetValue(tlsCertificate) is null) != (result.GetValue(tlsKey) is null))
            {
                result.AddError("--tls-cert and --tls-key go together");
            }
            else if (result.GetValue(maxConnections) < 0)
            {
                result.AddError("--max-connections cannot be negative");
            }
        });
        command.SetAction(async (parse, ct) =>
        {
            var request = new AddEndpointRequest(parse.GetValue(name)!, parse.GetValue(instance)!) 
            {
                Listen = parse.GetValue(listen),
                MaxConnections = parse.GetValue(maxConnections),
                TlsCertificateFile = parse.GetValue(tlsCertificate) is { } certificate ? Path.GetFullPath(certificate) : null,
                TlsKeyFile = parse.GetValue(tlsKey) is { } key ? Path.GetFullPath(key) : null,
                RequireTls = parse.GetValue(requireTls),
                ServerTls = parse.GetValue(serverTls) switch
                {
                    "disable" => ServerTlsMode.Disable,
                    "require" => ServerTlsMode.Require,
                    "verify-full" => ServerTlsMode.VerifyFull,
                    _ => ServerTlsMode.Prefer,
                },
                ServerTlsRootFile = parse.GetValue(serverTlsRoot) is { } root ? Path.GetFullPath(root) : null,
                Role = parse.GetValue(role) ? Teal.Core.Instances.InstanceRole.Reader : Teal.Core.Instances.InstanceRole.Writer,
            };
            if (parse.GetValue(pgBouncer) is { } admin)
            {
                var address = TealServerOptions.ParseAddress(admin, "endpoint");
                request = request with
                {
                    Kind = EndpointKind.PgBouncer,
                    PgBouncer = new PgBouncerSpec(address.Address.ToString(), address.Port, parse.GetValue(adminUser)!, parse.GetValue(database)!, parse.GetValue(config)!),
                    PgBouncerPassword = session.Environment("TEAL_PGBOUNCER_PASSWORD"),
                };
            }

            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Post, "/api/endpoints", request, ct);
            if (session.Json(parse))
            {
                session.WriteJson(body);
            }
            else
            {
                var e = ApiClient.Parse<EndpointView>(body);
                await session.Output.WriteLineAsync($"endpoint {e.Name} → {e.Instance} ({e.Listen ?? $"PgBouncer {e.PgBouncer?.AdminHost}:{e.PgBouncer?.AdminPort}"})");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Remove(CliSession session)
    {
        var name = new Argument<string>("NAME");
        var command = new Command("remove", "Remove an endpoint") { name };
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            await api.SendAsync(HttpMethod.Delete, $"/api/endpoints/{Uri.EscapeDataString(parse.GetValue(name)!)}", null, ct);
            if (!session.Json(parse))
            {
                await session.Output.WriteLineAsync($"endpoint {parse.GetValue(name)} removed");
            }

            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command List(CliSession session)
    {
        var command = new Command("list", "List endpoints with their live figures");
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Get, "/api/endpoints", null, ct);
            if (session.Json(parse))
            {
                session.WriteJson(body);
                return ExitCodes.Ok;
            }

            var table = new Table("NAME", "KIND", "INSTANCE", "ADDRESS", "ACTIVE", "HELD", "TOTAL", "ERRORS", "TLS SHA-256");
            foreach (var e in ApiClient.Parse<EndpointView[]>(body))
            {
                var address = e.Listen ?? (e.PgBouncer is { } b ? $"{b.AdminHost}:{b.AdminPort}/{b.Database}" : null);
                table.Add(e.Name, Format.Name(e.Kind), Describe(e), address, Count(e.Stats?.Active), Count(e.Stats?.Held), Count(e.Stats?.Total), Count(e.Stats?.Errors), e.TlsFingerprint);
            }

            table.WriteTo(session.Output);
            return ExitCodes.Ok;
        });
        return command;
    }

    private static Command Canary(CliSession session)
    {
        var name = new Argument<string>("NAME") { Description = "A reader endpoint of Teal's proxy" };
        var percent = new Option<int>("--green-percent") { Description = "Share of new read connections sent to green's readers before the switchover (0–100; 0 ends the canary)", Required = true };
        var command = new Command("canary", "Send a share of a reader endpoint's new connections to green's readers (10, then 50, then 100)") { name, percent };
        command.Validators.Add(result =>
        {
            if (result.GetValue(percent) is < 0 or > 100)
            {
                result.AddError($"--green-percent must be between 0 and 100, not {result.GetValue(percent)}");
            }
        });
        command.SetAction(async (parse, ct) =>
        {
            using var api = session.Client(parse);
            var body = await api.SendAsync(HttpMethod.Post, $"/api/endpoints/{Uri.EscapeDataString(parse.GetValue(name)!)}/canary", new CanaryRequest(parse.GetValue(percent)), ct);
            if (session.Json(parse))
            {
                session.WriteJson(body);
                return ExitCodes.Ok;
            }

            var e = ApiClient.Parse<EndpointView>(body);
            await session.Output.WriteLineAsync(e.CanaryInstance is null
                ? $"endpoint {e.Name}: no canary, every new connection → {e.Instance}"
                : $"endpoint {e.Name}: {e.CanaryPercent}% of new connections → {e.CanaryInstance} (green), the rest → its route");
            return ExitCodes.Ok;
        });
        return command;
    }

    private static string Describe(EndpointView e) =>
        e.Role == Teal.Core.Instances.InstanceRole.Reader
            ? $"{e.Instance} (reader{(e.CanaryInstance is null ? string.Empty : $", {e.CanaryPercent}% to {e.CanaryInstance}")})"
            : e.Instance;

    private static string? Count(long? value) => value?.ToString(CultureInfo.InvariantCulture);
}
