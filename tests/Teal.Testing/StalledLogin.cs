using System.Buffers.Binary;
using System.Net.Sockets;
using System.Text;
using Teal.Postgres.Wire;

namespace Teal.Testing;

/// <summary>
/// A client that takes its time to log in, on purpose: it connects and then either says nothing
/// yet (<see cref="Stage.Connected"/>: its backend is forked and waits for the startup packet) or
/// stops in the middle of its SCRAM exchange (<see cref="Stage.Challenged"/>: the server's
/// challenge received, the proof not sent). <see cref="FinishAsync"/> goes on from there and runs
/// one simple query. What a fence must survive: the backend was forked before the fence.
/// </summary>
public sealed class StalledLogin : IAsyncDisposable
{
    public enum Stage
    {
        Connected,
        Challenged,
    }

    private readonly Socket _socket = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    private readonly string _user;
    private readonly string _password;
    private readonly string _database;
    private ScramSha256? _scram;
    private string? _challenge;

    private StalledLogin(string user, string password, string database)
    {
        _user = user;
        _password = password;
        _database = database;
    }

    public static async Task<StalledLogin> StartAsync(string host, int port, string user, string password, string database, Stage stage)
    {
        var login = new StalledLogin(user, password, database);
        await login._socket.ConnectAsync(host, port);
        if (stage == Stage.Challenged)
        {
            await login.StartupAsync();
        }

        return login;
    }

    /// <summary>
    /// Logs in from where it stopped and runs <paramref name="sql"/>: null when every statement
    /// succeeded, else what the server said (an error, or that it closed the connection).
    /// </summary>
    public async Task<string?> FinishAsync(string sql)
    {
        try
        {
            if (_scram is null)
            {
                await StartupAsync();
            }

            await SendAsync('p', Encoding.UTF8.GetBytes(_scram!.ClientFinalMessage(_challenge!)));
            while (await ReadAsync() is var (type, body))
            {
                switch (type)
                {
                    case 'E':
                        return "refused at login: " + ErrorText(body);
                    case 'Z':
                        return await QueryAsync(sql);
                }
            }
        }
        catch (SocketException ex)
        {
            return "connection closed: " + ex.SocketErrorCode;
        }
        catch (InvalidOperationException ex)
        {
            return "closed before login: " + ex.Message;
        }

        return "connection closed by the server";
    }

    private async Task<string?> QueryAsync(string sql)
    {
        await SendAsync('Q', [.. Encoding.UTF8.GetBytes(sql), 0]);
        string? error = null;
        while (await ReadAsync() is var (type, body))
        {
            switch (type)
            {
                case 'E':
                    error ??= ErrorText(body);
                    break;
                case 'Z':
                    return error;
            }
        }

        return error ?? "connection closed by the server during the query";
    }

    private async Task StartupAsync()
    {
        var parameters = Encoding.UTF8.GetBytes($"user\0{_user}\0database\0{_database}\0application_name\0stalled_login\0\0");
        var packet = new byte[8 + parameters.Length];
        BinaryPrimitives.WriteInt32BigEndian(packet, packet.Length);
        BinaryPrimitives.WriteInt32BigEndian(packet.AsSpan(4), 196608);
        parameters.CopyTo(packet, 8);
        await _socket.SendAsync(packet);
        if (await ReadAsync() is not ('R', var request) || BinaryPrimitives.ReadInt32BigEndian(request) != 10)
        {
            throw new InvalidOperationException("the server did not ask for SASL authentication");
        }

        _scram = new ScramSha256(_password);
        var first = Encoding.UTF8.GetBytes(_scram.ClientFirstMessage);
        var mechanism = Encoding.UTF8.GetBytes(ScramSha256.Mechanism + "\0");
        var body = new byte[mechanism.Length + 4 + first.Length];
        mechanism.CopyTo(body, 0);
        BinaryPrimitives.WriteInt32BigEndian(body.AsSpan(mechanism.Length), first.Length);
        first.CopyTo(body, mechanism.Length + 4);
        await SendAsync('p', body);
        if (await ReadAsync() is not ('R', var challenge) || BinaryPrimitives.ReadInt32BigEndian(challenge) != 11)
        {
            throw new InvalidOperationException("the server sent no SCRAM challenge");
        }

        _challenge = Encoding.UTF8.GetString(challenge.AsSpan(4));
    }

    private async Task SendAsync(char type, byte[] body)
    {
        var message = new byte[5 + body.Length];
        message[0] = (byte)type;
        BinaryPrimitives.WriteInt32BigEndian(message.AsSpan(1), body.Length + 4);
        body.CopyTo(message, 5);
        await _socket.SendAsync(message);
    }

    private async Task<(char Type, byte[] Body)?> ReadAsync()
    {
        var header = new byte[5];
        if (!await FillAsync(header))
        {
            return null;
        }

        var body = new byte[BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(1)) - 4];
        return await FillAsync(body) ? ((char)header[0], body) : null;
    }

    private async Task<bool> FillAsync(byte[] buffer)
    {
        for (var read = 0; read < buffer.Length;)
        {
            var n = await _socket.ReceiveAsync(buffer.AsMemory(read));
            if (n == 0)
            {
                return false;
            }

            read += n;
        }

        return true;
    }

    private static string ErrorText(byte[] body) =>
        string.Join(" ", Encoding.UTF8.GetString(body).Split('\0').Where(f => f.Length > 1 && f[0] is 'C' or 'M').Select(f => f[1..]));

    public ValueTask DisposeAsync()
    {
        _socket.Dispose();
        return ValueTask.CompletedTask;
    }
}
