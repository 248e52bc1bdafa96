using System.Net.Http.Json;
using Teal.Postgres.Instances;
using Teal.Server.Api;
using Teal.Server.Json;
using Teal.Testing;

namespace Teal.Cli.Tests;

/// <summary><c>teal serve</c> through the CLI's own entry, and verbs that run until Ctrl-C.</summary>
public sealed class ServeCommandTests
{
    [Fact]
    public async Task Serve_AnswersHealthz_AndStopsCleanlyOnCtrlC()
    {
        var dataDirectory = TestDirectories.NewDirectory("serve");
        var port = ManagedPostgres.FreePort();
        using var ctrlC = new CancellationTokenSource();
        var serve = CliRun.RunAsync(new Dictionary<string, string>(), ctrlC.Token, "serve", "--data-dir", dataDirectory, "--listen", $"127.0.0.1:{port}");
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };

        var health = await PollHealthAsync(http, serve);
        var follow = CliRun.RunAsync(new Dictionary<string, string>(), ctrlC.Token, "events", "--follow", "--server", http.BaseAddress.ToString(), "--data-dir", dataDirectory);
        await Task.Delay(500);
        await ctrlC.CancelAsync();
        var served = await serve.WaitAsync(TimeSpan.FromSeconds(30));
        var followed = await follow.WaitAsync(TimeSpan.FromSeconds(30));

        health.Status.ShouldBe("ok");
        served.ExitCode.ShouldBe(0, served.ToString());
        served.Stdout.ShouldContain($"serving http://127.0.0.1:{port}/");
        File.Exists(Path.Combine(dataDirectory, "teal.db")).ShouldBeTrue();
        File.GetUnixFileMode(Path.Combine(dataDirectory, "token")).ShouldBe(UnixFileMode.UserRead | UnixFileMode.UserWrite);
        followed.ExitCode.ShouldBe(0, followed.ToString());
        followed.Stdout.ShouldStartWith("SEQ  TIME");
    }

    [Fact]
    public async Task Serve_AddressInUse_Exit1()
    {
        using var holder = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        holder.Start();
        var port = ((System.Net.IPEndPoint)holder.LocalEndpoint).Port;

        var run = await CliRun.RunAsync("serve", "--data-dir", TestDirectories.NewDirectory("serve"), "--listen", $"127.0.0.1:{port}");

        run.ExitCode.ShouldBe(1, run.ToString());
        run.ErrorLines[0].ShouldStartWith($"error: cannot listen on 127.0.0.1:{port}");
    }

    [Fact]
    public async Task Serve_AddressInUse_RealProcess_PrintsOneLineAndAHint_NoStackTrace()
    {
        using var holder = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        holder.Start();
        var port = ((System.Net.IPEndPoint)holder.LocalEndpoint).Port;
        var info = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { Teal.Testing.Processes.RepoPaths.TealDll, "serve", "--data-dir", TestDirectories.NewDirectory("serve"), "--listen", $"127.0.0.1:{port}" })
        {
            info.ArgumentList.Add(arg);
        }

        using var process = System.Diagnostics.Process.Start(info)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(2));

        process.ExitCode.ShouldBe(1);
        (await stdout).ShouldBeEmpty();
        var lines = (await stderr).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        lines.Length.ShouldBe(2, await stderr);
        lines[0].ShouldBe($"error: cannot listen on 127.0.0.1:{port}: the address is already in use");
        lines[1].ShouldStartWith("hint: ");
        lines[1].ShouldContain("--listen");
    }

    private static async Task<HealthView> PollHealthAsync(HttpClient http, Task<CliRun> serve)
    {
        for (var attempt = 0; attempt < 300; attempt++)
        {
            if (serve.IsCompleted)
            {
                throw new InvalidOperationException($"teal serve ended early: {await serve}");
            }

            try
            {
                return (await http.GetFromJsonAsync<HealthView>("/healthz", TealJson.Options))!;
            }
            catch (HttpRequestException)
            {
                await Task.Delay(100);
            }
        }

        throw new TimeoutException("teal serve did not answer /healthz within 30 s");
    }
}
