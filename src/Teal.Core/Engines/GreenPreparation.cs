namespace Teal.Core.Engines;

/// <summary>
/// One table made ready for production on green after the initial copy (PostgreSQL:
/// <c>VACUUM (ANALYZE)</c>): <paramref name="Done"/> of <paramref name="Total"/> tables, and the
/// bytes of the tables done so far out of all of them (progress weighted by size).
/// </summary>
public sealed record TablePrepared(string Table, int Done, int Total, long BytesDone, long BytesTotal, double Seconds);
