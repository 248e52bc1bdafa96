namespace Teal.Core.Endpoints;

/// <summary>
/// What serves declared endpoints (Teal's proxy listeners; PgBouncer drivers): started when an
/// endpoint is declared, stopped when it is removed.
/// </summary>
public interface IEndpointHost
{
    /// <summary>Starts serving <paramref name="spec"/>; throws when it cannot (the declaration is then taken back).</summary>
    Task StartAsync(EndpointSpec spec, CancellationToken cancellationToken);

    /// <summary>Stops serving the endpoint named <paramref name="name"/>, if anything serves it.</summary>
    Task StopAsync(string name);
}
