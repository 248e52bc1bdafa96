using Teal.Core.Errors;
using Teal.Core.Instances;
using Teal.Core.Secrets;
using Teal.Core.State;

namespace Teal.Core.Endpoints;

/// <summary>
/// Endpoint declarations in the state store. The live side (proxy listeners, PgBouncer drivers)
/// (<see cref="IEndpointHost"/>) starts and stops with them; each is listed with the live
/// endpoint the <see cref="IEndpointRegistry"/> finds for it (null when nothing serves it right now).
/// </summary>
public sealed class EndpointService(IStateStore state, ISecretStore secrets, IEndpointHost live, IEndpointRegistry registry, TimeProvider time)
{
    public async Task<IReadOnlyList<DeclaredEndpoint>> ListAsync(CancellationToken cancellationToken)
    {
        var declared = new List<DeclaredEndpoint>();
        foreach (var spec in await state.ListEndpointsAsync(cancellationToken))
        {
            declared.Add(new DeclaredEndpoint(spec, await registry.FindAsync(spec, cancellationToken)));
        }

        return declared;
    }

    /// <summary>Refuses a request that could not be added (before anything else is created for it).</summary>
    public async Task ValidateAsync(AddEndpointRequest request, bool instanceMustExist, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        Names.Validate("endpoint", request.Name);
        if (await state.GetEndpointAsync(request.Name, cancellationToken) is not null)
        {
            throw new TealException("endpoint.duplicate-name", $"an endpoint named '{request.Name}' already exists", "choose another name (see `teal endpoint list`)") { Kind = TealErrorKind.Conflict };
        }

        if (instanceMustExist && await state.GetInstanceAsync(request.Instance, cancellationToken) is null)
        {
            throw new TealException("instance.not-found", $"no instance named '{request.Instance}'", "see `teal instance list`") { Kind = TealErrorKind.NotFound };
        }

        switch (request.Kind)
        {
            case EndpointKind.Proxy:
                var listen = request.Listen ?? throw new TealException("endpoint.missing-listen", "a proxy endpoint needs an address to listen on", "add --listen HOST:PORT");
                var address = ListenAddress.Parse(listen, "endpoint");
                var taken = (await state.ListEndpointsAsync(cancellationToken)).FirstOrDefault(e => e.Listen is not null && ListenAddress.Parse(e.Listen, "endpoint").Equals(address));
                if (taken is not null)
                {
                    throw new TealException("endpoint.address-in-use", $"endpoint '{taken.Name}' already listens on {listen}", "choose another port") { Kind = TealErrorKind.Conflict };
                }

                ValidateServerTls(request);

                break;
            case EndpointKind.PgBouncer when request.PgBouncer is null:
                throw new TealException("endpoint.missing-pgbouncer", "a PgBouncer endpoint needs PgBouncer's address, admin user, database entry and config file", "see `teal endpoint add --help`");
        }
    }

    private static void ValidateServerTls(AddEndpointRequest request)
    {
        if (request.ServerTlsRootFile is { } roots)
        {
            if (request.ServerTls != ServerTlsMode.VerifyFull)
            {
                throw new TealException("endpoint.server-tls-roots", "root certificates for the servers are only used with --server-tls verify-full", "add --server-tls verify-full, or leave out --server-tls-root");
            }

            if (!File.Exists(roots))
            {
                throw new TealException("endpoint.server-tls-roots", $"the root certificate file {roots} does not exist", "give the PEM file of the CA that signed the servers' certificates");
            }
        }
    }

    public async Task<DeclaredEndpoint> AddAsync(AddEndpointRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        await ValidateAsync(request, instanceMustExist: true, cancellationToken);
        var pgBouncer = request.PgBouncer;
        if (pgBouncer is not null && request.PgBouncerPassword is not null)
        {
            pgBouncer = pgBouncer with { SecretRef = SecretReferences.NewReference("endpoint") };
            secrets.Write(pgBouncer.SecretRef, request.PgBouncerPassword);
        }

        var spec = new EndpointSpec(request.Name, request.Kind, request.Instance)
        {
            Listen = request.Kind == EndpointKind.Proxy ? request.Listen : null,
            MaxConnections = request.Kind == EndpointKind.Proxy ? request.MaxConnections : 0,
            TlsCertificateFile = request.Kind == EndpointKind.Proxy ? request.TlsCertificateFile : null,
            TlsKeyFile = request.Kind == EndpointKind.Proxy ? request.TlsKeyFile : null,
            RequireTls = request.Kind == EndpointKind.Proxy && request.RequireTls,
            ServerTls = request.ServerTls,
            ServerTlsRootFile = request.Kind == EndpointKind.Proxy ? request.ServerTlsRootFile : null,
            Role = request.Role,
            PgBouncer = pgBouncer,
            CreatedAt = time.GetUtcNow(),
        };
        await state.AddEndpointAsync(spec, cancellationToken);
        try
        {
            await live.StartAsync(spec, cancellationToken);
        }
        catch
        {
            // An endpoint that cannot listen is not kept: the operator fixes the address and adds it again.
            await state.RemoveEndpointAsync(spec.Name, CancellationToken.None);
            if (spec.PgBouncer?.SecretRef is { } secret)
            {
                secrets.Remove(secret);
            }

            throw;
        }

        return (await ListAsync(cancellationToken)).First(e => e.Spec.Name == spec.Name);
    }

    public async Task RemoveAsync(string name, CancellationToken cancellationToken)
    {
        var spec = await state.GetEndpointAsync(name, cancellationToken)
            ?? throw new TealException("endpoint.not-found", $"no endpoint named '{name}'", "see `teal endpoint list`") { Kind = TealErrorKind.NotFound };
        await live.StopAsync(name);
        await state.RemoveEndpointAsync(name, cancellationToken);
        if (spec.PgBouncer?.SecretRef is { } secret)
        {
            secrets.Remove(secret);
        }
    }
}
