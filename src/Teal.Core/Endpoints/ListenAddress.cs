using System.Globalization;
using System.Net;
using Teal.Core.Errors;

namespace Teal.Core.Endpoints;

/// <summary>An address to listen on, as operators write it: Teal's API, a proxy endpoint.</summary>
public static class ListenAddress
{
    /// <summary>Parses <c>HOST:PORT</c> (<c>[::1]:7400</c> for IPv6; <c>localhost</c> means loopback).</summary>
    public static IPEndPoint Parse(string text, string what)
    {
        ArgumentNullException.ThrowIfNull(text);
        var colon = text.LastIndexOf(':');
        if (colon > 0
            && int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port)
            && port is >= 0 and <= 65535)
        {
            var host = text[..colon].Trim('[', ']');
            if (host == "localhost")
            {
                return new IPEndPoint(IPAddress.Loopback, port);
            }

            if (IPAddress.TryParse(host, out var address))
            {
                return new IPEndPoint(address, port);
            }
        }

        throw new TealException($"{what}.invalid-address", $"'{text}' is not an address to listen on", "use HOST:PORT with an IP address, e.g. 127.0.0.1:7400");
    }
}
