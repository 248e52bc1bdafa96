namespace Teal.Core.Endpoints;

/// <summary>An endpoint's declaration and the live endpoint serving it (null when nothing serves it right now).</summary>
public sealed record DeclaredEndpoint(EndpointSpec Spec, IEndpoint? Live);
