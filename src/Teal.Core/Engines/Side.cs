namespace Teal.Core.Engines;

/// <summary>One side of a deployment.</summary>
public enum Side
{
    Blue,
    Green,
}
