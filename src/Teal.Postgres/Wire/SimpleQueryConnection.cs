using System.Buffers;
using System.Buffers.Binary;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace Teal.Postgres.Wire;

/// <summary>Where and as whom a <see cref="SimpleQueryConnection"/> logs in.</summary>
public sealed record WireConnectOptions(string Host, int Port, string User, string Database)
{
    public string? Password { get; init; }

    public string ApplicationName { get; init; } = "teal";

    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    // A record prints every property: this one must never show the password.
    public override string ToString() => $"{User}@{Host}:{Port}/{Database}";
}

/// <summary>
/// A minimal PostgreSQL protocol v3 client: startup, SCRAM-SHA-256 or md5 authentication and the
/// simple query protocol, all values as text. It exists for PgBouncer's admin console (the
/// <c>pgbouncer</c> virtual database), which answers only simple queries and no catalog
/// lookups, so a full driver cannot talk to it reliably. One operation at a time; a cancelled
/// or failed read leaves the protocol state unknown, so the connection is then closed.
/// </summary>
public sealed class SimpleQueryConnection : IAsyncDisposable
{
    private const int ProtocolVersion3 = 196608;

    // The console's answers are a few kilobytes; anything this large is not PostgreSQL talking.
    private const int MaxMessageLength = 64 * 1024 * 1024;

    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly byte[] _header = new byte[5];
    private readonly Dictionary<string, string> _parameters = new(StringComparer.Ordinal);
    private int _busy;

    private SimpleQueryConnection(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
    }

    /// <summary>ParameterStatus values the server sent (server_version, application_name, …).</summary>
    public IReadOnlyDictionary<string, string> ServerParameters => _parameters;

    /// <summary>True once an operation failed midway or was cancelled: the connection cannot be used again.</summary>
    public bool IsBroken { get; private set; }

    /// <summary>Connects and logs in; refusals arrive as <see cref="PostgresWireException"/>, network failures as <see cref="SocketException"/>.</summary>
    public static async Task<SimpleQueryConnection> OpenAsync(WireConnectOptions options, CancellationToken cancellationToken)
    {
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        SimpleQueryConnection? connection = null;
        try
        {
            using (var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
            {
                timeout.CancelAfter(options.ConnectTimeout);
                try
                {
                    await socket.ConnectAsync(options.Host, options.Port, timeout.Token);
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    throw new SocketException((int)SocketError.TimedOut);
                }
            }

            connection = new SimpleQueryConnection(socket);
            await connection.StartupAsync(options, cancellationToken);
            return connection;
        }
        catch
        {
            if (connection is not null)
            {
                await connection.DisposeAsync();
            }
            else
            {
                socket.Dispose();
            }

            throw;
        }
    }

    /// <summary>Runs <paramref name="sql"/> (one or more statements) and returns one result per statement.</summary>
    public async Task<IReadOnlyList<QueryResult>> ExecuteAsync(string sql, CancellationToken cancellationToken)
    {
        Enter();
        try
        {
            await WriteAsync(Message('Q', w => w.CString(sql)), cancellationToken);
            return await ReadResultsAsync(cancellationToken);
        }
        catch (Exception ex) when (ex is not PostgresWireException)
        {
            IsBroken = true;
            throw;
        }
        finally
        {
            Volatile.Write(ref _busy, 0);
        }
    }

    /// <summary>Runs one statement and returns its result.</summary>
    public async Task<QueryResult> QueryAsync(string sql, CancellationToken cancellationToken)
    {
        var results = await ExecuteAsync(sql, cancellationToken);
        return results.Count > 0 ? results[^1] : new QueryResult("", [], []);
    }

    public async ValueTask DisposeAsync()
    {
        if (!IsBroken && Interlocked.Exchange(ref _busy, 1) == 0)
        {
            try
            {
                // Terminate lets the server log a clean disconnect instead of an EOF.
                using var quick = new CancellationTokenSource(TimeSpan.FromSeconds(1));
                await _stream.WriteAsync(Message('X', _ => { }), quick.Token);
            }
            catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
            {
                // The server is gone already; nothing to tell it.
            }
        }

        IsBroken = true;
        await _stream.DisposeAsync();
        _socket.Dispose();
    }

    private void Enter()
    {
        ObjectDisposedException.ThrowIf(IsBroken, this);
        if (Interlocked.Exchange(ref _busy, 1) != 0)
        {
            throw new InvalidOperationException("the connection is already running a query");
        }
    }

    private async Task StartupAsync(WireConnectOptions options, CancellationToken cancellationToken)
    {
        var startup = new MessageWriter();
        startup.Int32(0);
        startup.Int32(ProtocolVersion3);
        startup.CString("user").CString(options.User);
        startup.CString("database").CString(options.Database);
        startup.CString("application_name").CString(options.ApplicationName);
        startup.Byte(0);
        await WriteAsync(startup.WithLength(0), cancellationToken);

        ScramSha256? scram = null;
        while (true)
        {
            var (type, body) = await ReadMessageAsync(cancellationToken);
            switch (type)
            {
                case 'R':
                    scram = await AuthenticateAsync(options, new MessageReader(body), scram, cancellationToken);
                    break;
                case 'S':
                    ReadParameterStatus(body);
                    break;
                case 'E':
                    throw ReadError(body);
                case 'K' or 'N':
                    break;
                case 'Z':
                    return;
                default:
                    throw Protocol($"unexpected message '{type}' during startup");
            }
        }
    }

    private async Task<ScramSha256?> AuthenticateAsync(WireConnectOptions options, MessageReader reader, ScramSha256? scram, CancellationToken cancellationToken)
    {
        var code = reader.Int32();
        switch (code)
        {
            case 0:
                return scram;
            case 5:
                // md5 is weak, but it is the protocol PostgreSQL and PgBouncer define for auth_type md5.
#pragma warning disable CA5351
                var password = RequirePassword(options);
                var salt = reader.Bytes(4);
                // md5(md5(password || user) || salt), hex, prefixed with "md5", as libpq does.
                var inner = Convert.ToHexStringLower(MD5.HashData(Encoding.UTF8.GetBytes(password + options.User)));
                var outer = Convert.ToHexStringLower(MD5.HashData([.. Encoding.ASCII.GetBytes(inner), .. salt]));
#pragma warning restore CA5351
                await WriteAsync(Message('p', w => w.CString("md5" + outer)), cancellationToken);
                return scram;
            case 10:
                var mechanisms = new List<string>();
                while (reader.CString() is { Length: > 0 } mechanism)
                {
                    mechanisms.Add(mechanism);
                }

                if (!mechanisms.Contains(ScramSha256.Mechanism))
                {
                    throw Protocol($"the server offers only {string.Join(", ", mechanisms)}; Teal supports {ScramSha256.Mechanism} without TLS");
                }

                scram = new ScramSha256(RequirePassword(options));
                var first = Encoding.UTF8.GetBytes(scram.ClientFirstMessage);
                await WriteAsync(Message('p', w => w.CString(ScramSha256.Mechanism).Int32(first.Length).Raw(first)), cancellationToken);
                return scram;
            case 11:
                var final = (scram ?? throw Protocol("SCRAM continuation before SCRAM started")).ClientFinalMessage(Encoding.UTF8.GetString(reader.Rest()));
                await WriteAsync(Message('p', w => w.Raw(Encoding.UTF8.GetBytes(final))), cancellationToken);
                return scram;
            case 12:
                (scram ?? throw Protocol("SCRAM final message before SCRAM started")).VerifyServerFinal(Encoding.UTF8.GetString(reader.Rest()));
                return scram;
            case 3:
                // Sending a password in clear over a plain TCP connection is what Teal will not do.
                throw new PostgresWireException("FATAL", "28000", "the server asks for a cleartext password", hint: "use auth_type scram-sha-256 or md5");
            default:
                throw new PostgresWireException("FATAL", "28000", $"unsupported authentication request {code}", hint: "use scram-sha-256 or md5 authentication");
        }
    }

    private static string RequirePassword(WireConnectOptions options) =>
        options.Password ?? throw new PostgresWireException("FATAL", "28P01", $"the server asks user \"{options.User}\" for a password and none was given");

    private async Task<IReadOnlyList<QueryResult>> ReadResultsAsync(CancellationToken cancellationToken)
    {
        var results = new List<QueryResult>();
        PostgresWireException? error = null;
        List<string> columns = [];
        List<IReadOnlyList<string?>> rows = [];
        while (true)
        {
            var (type, body) = await ReadMessageAsync(cancellationToken);
            switch (type)
            {
                case 'T':
                    columns = ReadRowDescription(body);
                    rows = [];
                    break;
                case 'D':
                    rows.Add(ReadDataRow(body));
                    break;
                case 'C':
                    results.Add(new QueryResult(new MessageReader(body).CString(), columns, rows));
                    columns = [];
                    rows = [];
                    break;
                case 'I':
                    results.Add(new QueryResult("", [], []));
                    break;
                case 'E':
                    // The server still sends ReadyForQuery after an error: read up to it, then throw.
                    error ??= ReadError(body);
                    break;
                case 'S':
                    ReadParameterStatus(body);
                    break;
                case 'N' or 'A':
                    break;
                case 'Z':
                    return error is null ? results : throw error;
                default:
                    throw Protocol($"unexpected message '{type}' in a simple query (COPY is not supported)");
            }
        }
    }

    private static List<string> ReadRowDescription(byte[] body)
    {
        var reader = new MessageReader(body);
        var count = reader.Int16();
        var columns = new List<string>(count);
        for (var i = 0; i < count; i++)
        {
            columns.Add(reader.CString());
            // table oid, attribute number, type oid, type size, type modifier, format code
            reader.Skip(4 + 2 + 4 + 2 + 4 + 2);
        }

        return columns;
    }

    private static string?[] ReadDataRow(byte[] body)
    {
        var reader = new MessageReader(body);
        var values = new string?[reader.Int16()];
        for (var i = 0; i < values.Length; i++)
        {
            var length = reader.Int32();
            values[i] = length < 0 ? null : Encoding.UTF8.GetString(reader.Bytes(length));
        }

        return values;
    }

    private void ReadParameterStatus(byte[] body)
    {
        var reader = new MessageReader(body);
        var name = reader.CString();
        _parameters[name] = reader.CString();
    }

    private static PostgresWireException ReadError(byte[] body)
    {
        var reader = new MessageReader(body);
        var fields = new Dictionary<char, string>();
        while (reader.Remaining > 0 && reader.Byte() is var code and not 0)
        {
            fields[(char)code] = reader.CString();
        }

        // 'V' is the non-localized severity (PostgreSQL ≥ 9.6); PgBouncer sends only 'S'.
        var severity = fields.GetValueOrDefault('V') ?? fields.GetValueOrDefault('S') ?? "ERROR";
        return new PostgresWireException(severity, fields.GetValueOrDefault('C') ?? "XX000", fields.GetValueOrDefault('M') ?? "server error", fields.GetValueOrDefault('D'), fields.GetValueOrDefault('H'));
    }

    private async Task<(char Type, byte[] Body)> ReadMessageAsync(CancellationToken cancellationToken)
    {
        try
        {
            await _stream.ReadExactlyAsync(_header, cancellationToken);
            var length = BinaryPrimitives.ReadInt32BigEndian(_header.AsSpan(1));
            if (length < 4 || length > MaxMessageLength)
            {
                throw Protocol($"invalid message length {length}");
            }

            var body = new byte[length - 4];
            await _stream.ReadExactlyAsync(body, cancellationToken);
            return ((char)_header[0], body);
        }
        catch (EndOfStreamException ex)
        {
            IsBroken = true;
            throw new IOException("the server closed the connection", ex);
        }
        catch (Exception ex) when (ex is not PostgresWireException)
        {
            IsBroken = true;
            throw;
        }
    }

    private async Task WriteAsync(byte[] message, CancellationToken cancellationToken)
    {
        try
        {
            await _stream.WriteAsync(message, cancellationToken);
        }
        catch
        {
            IsBroken = true;
            throw;
        }
    }

    private static byte[] Message(char type, Action<MessageWriter> body)
    {
        var writer = new MessageWriter();
        writer.Byte((byte)type);
        writer.Int32(0);
        body(writer);
        return writer.WithLength(1);
    }

    private PostgresWireException Protocol(string message)
    {
        IsBroken = true;
        return new PostgresWireException("FATAL", "08P01", message);
    }

    private sealed class MessageWriter
    {
        private readonly ArrayBufferWriter<byte> _buffer = new(256);

        public MessageWriter Byte(byte value)
        {
            _buffer.Write([value]);
            return this;
        }

        public MessageWriter Int32(int value)
        {
            Span<byte> bytes = stackalloc byte[4];
            BinaryPrimitives.WriteInt32BigEndian(bytes, value);
            _buffer.Write(bytes);
            return this;
        }

        public MessageWriter CString(string value)
        {
            _buffer.Write(Encoding.UTF8.GetBytes(value));
            _buffer.Write([(byte)0]);
            return this;
        }

        public MessageWriter Raw(byte[] value)
        {
            _buffer.Write(value);
            return this;
        }

        /// <summary>The bytes, with the int32 length (which counts itself) filled in at <paramref name="offset"/>.</summary>
        public byte[] WithLength(int offset)
        {
            var bytes = _buffer.WrittenSpan.ToArray();
            BinaryPrimitives.WriteInt32BigEndian(bytes.AsSpan(offset), bytes.Length - offset);
            return bytes;
        }
    }

    private sealed class MessageReader(byte[] body)
    {
        private int _position;

        public int Remaining => body.Length - _position;

        public byte Byte() => Bytes(1)[0];

        public short Int16() => BinaryPrimitives.ReadInt16BigEndian(Bytes(2));

        public int Int32() => BinaryPrimitives.ReadInt32BigEndian(Bytes(4));

        public void Skip(int count) => Bytes(count);

        public byte[] Rest() => Bytes(Remaining);

        public string CString()
        {
            var end = Array.IndexOf(body, (byte)0, _position);
            if (end < 0)
            {
                throw new PostgresWireException("FATAL", "08P01", "unterminated string in a server message");
            }

            var value = Encoding.UTF8.GetString(body, _position, end - _position);
            _position = end + 1;
            return value;
        }

        public byte[] Bytes(int count)
        {
            if (count < 0 || count > Remaining)
            {
                throw new PostgresWireException("FATAL", "08P01", "truncated server message");
            }

            var bytes = body.AsSpan(_position, count).ToArray();
            _position += count;
            return bytes;
        }
    }
}
