namespace Teal.Cli.Demo;

/// <summary>Where the demo runs: its own data directory, API port and endpoint port on loopback.</summary>
internal sealed record DemoOptions(string Directory, int Port, int EndpointPort)
{
    public const string DefaultDirectory = "/tmp/teal-demo";

    public Uri Server => new($"http://127.0.0.1:{Port}/");

    public string ServeLog => Path.Combine(Directory, "serve.log");

    public string PidFile => Path.Combine(Directory, "serve.pid");
}
