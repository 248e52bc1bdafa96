namespace Teal.Testing.Processes;

/// <summary>Paths in the repository the tests run from (the build puts every project under its own bin).</summary>
public static class RepoPaths
{
    /// <summary>The repository root: the nearest parent holding <c>Teal.slnx</c>.</summary>
    public static string Root { get; } = FindRoot();

    /// <summary>Release or Debug: the configuration the tests themselves were built in.</summary>
    public static string Configuration { get; } = AppContext.BaseDirectory.Contains("/Debug/", StringComparison.Ordinal) ? "Debug" : "Release";

    /// <summary>The built <c>teal</c> executable's assembly (scripts/test.sh builds it before the tests run).</summary>
    public static string TealDll => Built("src/Teal.Cli", "teal.dll");

    public static string Built(string project, string assembly)
    {
        var path = Path.Combine(Root, project, "bin", Configuration, "net10.0", assembly);
        return File.Exists(path) ? path : throw new FileNotFoundException($"{path} is missing; build the solution first (scripts/test.sh does)");
    }

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Teal.slnx")))
            {
                return dir.FullName;
            }
        }

        throw new DirectoryNotFoundException("Teal.slnx not found above " + AppContext.BaseDirectory);
    }
}
