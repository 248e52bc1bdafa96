using Microsoft.Playwright;
using Teal.Server.Tests.Support;
using Teal.Testing.Processes;

namespace Teal.Server.Tests.Dashboard;

/// <summary>
/// The dashboard in a real browser (Debian's Chromium, driven by Playwright; its own browser
/// download is never used): an operator finds the deployment, reads both sides, enters the
/// token, runs the switchover from the page and watches it complete. Screenshots of each step
/// are kept under artifacts/dashboard/ for a person to look at.
/// </summary>
public sealed class DashboardTests : IAsyncLifetime
{
    private static readonly string Artifacts = Path.Combine(RepoPaths.Root, "artifacts", "dashboard");

    private LiveDeployment _live = null!; // Set in InitializeAsync.
    private IPlaywright _playwright = null!;
    private IBrowser _browser = null!;

    public async Task InitializeAsync()
    {
        File.Exists("/usr/bin/chromium").ShouldBeTrue("Chromium is missing: run scripts/setup.sh");
        // With one reader of green, so the page shows green's topology too.
        _live = await LiveDeployment.StartAsync(targetReaders: 1);
        // Playwright's 5 s default is for a page on an idle machine; here guardrails and the page's
        // polls share two cores with the rest of the suite, so give every expectation room.
        Assertions.SetDefaultExpectTimeout(30_000);
        _playwright = await Playwright.CreateAsync();
        _browser = await _playwright.Chromium.LaunchAsync(new()
        {
            ExecutablePath = "/usr/bin/chromium",
            Headless = true,
            Args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
        });
        Directory.CreateDirectory(Artifacts);
    }

    public async Task DisposeAsync()
    {
        await _browser.DisposeAsync();
        _playwright.Dispose();
        await _live.DisposeAsync();
    }

    [Fact]
    public async Task Operator_FindsTheDeployment_AndSwitchesOverFromThePage()
    {
        var page = await _browser.NewPageAsync(new() { ViewportSize = new() { Width = 1440, Height = 1200 } });
        var errors = new List<string>();
        page.PageError += (_, error) => errors.Add(error);
        await page.GotoAsync(_live.Teal.Url.ToString());

        // The list: the deployment with its status.
        var row = page.GetByTestId("deployment-row").Filter(new() { HasText = LiveDeployment.Name });
        await Assertions.Expect(row).ToContainTextAsync("AVAILABLE");
        await page.ScreenshotAsync(new() { Path = Path.Combine(Artifacts, "1-deployments.png"), FullPage = true });

        // The deployment page: blue and green side by side, tasks done, lag drawn, events listed.
        // The click is held across the list's 2-s refresh: a row replaced under the pointer
        // between press and release would get no click, and the operator's click would be lost.
        await row.HoverAsync();
        await page.Mouse.DownAsync();
        await Task.Delay(2500);
        await page.Mouse.UpAsync();
        await Assertions.Expect(page.GetByTestId("status")).ToHaveTextAsync("AVAILABLE");
        await Assertions.Expect(page.GetByTestId("blue")).ToContainTextAsync("postgres 15.");
        await Assertions.Expect(page.GetByTestId("green")).ToContainTextAsync("postgres 17.");
        await Assertions.Expect(page.GetByTestId("blue")).ToContainTextAsync($"127.0.0.1:{_live.EndpointPort}");
        await Assertions.Expect(page.GetByTestId("task")).ToHaveCountAsync(6); // provision, schema, data, analyze, topology, catch-up
        // Green's reader with its streaming state, as the monitor reads it from green.
        await Assertions.Expect(page.GetByTestId("green-readers")).ToContainTextAsync("-r1");
        await Assertions.Expect(page.GetByTestId("green").GetByTestId("reader-state")).ToHaveTextAsync("streaming");
        await Assertions.Expect(page.GetByTestId("events")).ToContainTextAsync("available");
        await Assertions.Expect(page.GetByTestId("switchover-start")).ToBeDisabledAsync();

        // The token unlocks the actions: guardrails, verify.
        await page.FillAsync("#token", _live.Teal.Token);
        await page.ClickAsync("#token-form button");
        await page.GetByTestId("run-checks").ClickAsync();
        await Assertions.Expect(page.GetByTestId("checks")).ToContainTextAsync("✓");
        await page.GetByTestId("verify-now").ClickAsync();
        await Assertions.Expect(page.GetByTestId("verify-result")).ToContainTextAsync("PASS", new() { Timeout = 60_000 });
        await page.ScreenshotAsync(new() { Path = Path.Combine(Artifacts, "2-deployment.png"), FullPage = true });

        // The switchover: the name must be typed before the button arms.
        await page.FillAsync("#switchover-timeout", "60");
        await page.GetByTestId("switchover-confirm").FillAsync("not-the-name");
        await Assertions.Expect(page.GetByTestId("switchover-start")).ToBeDisabledAsync();
        await page.GetByTestId("switchover-confirm").FillAsync(LiveDeployment.Name);
        await page.GetByTestId("switchover-start").ClickAsync();

        await Assertions.Expect(page.GetByTestId("switchover-outcome")).ToHaveTextAsync("COMPLETED", new() { Timeout = 120_000 });
        await Assertions.Expect(page.GetByTestId("status")).ToHaveTextAsync("SWITCHOVER_COMPLETED");
        await Assertions.Expect(page.GetByTestId("write-pause")).ToHaveTextAsync(new System.Text.RegularExpressions.Regex(@"^\d+ ms$"));
        await Assertions.Expect(page.GetByTestId("phases")).ToContainTextAsync("flip");
        await Assertions.Expect(page.GetByTestId("events")).ToContainTextAsync("switchover-completed");
        // The old blue is shown as what it is now: fenced, with the command that lets clients back.
        // With reverse replication (the default) it applies green's writes until switchback or finish.
        await Assertions.Expect(page.GetByTestId("blue-role")).ToContainTextAsync("old blue, fenced; applies green's writes");
        await page.ScreenshotAsync(new() { Path = Path.Combine(Artifacts, "3-switchover.png"), FullPage = true });

        errors.ShouldBeEmpty();
        (await _live.ShowAsync()).GetProperty("switchover").GetProperty("outcome").GetString().ShouldBe("COMPLETED");
    }
}
