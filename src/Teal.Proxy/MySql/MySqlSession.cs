namespace Teal.Proxy.MySql;

/// <summary>
/// What the proxy knows of one MySQL session from the packets passing through: whether login is
/// over, which commands still wait for (the rest of) their response, and the server's last
/// reported status flags — together, whether the session sits idle outside a transaction.
/// Commands are queued as the client sends them (clients may pipeline) and retired as their
/// responses end, following each response's shape: an OK or ERR, a result set (column count,
/// column definitions, rows, terminator; more results when the terminator says so), a prepared
/// statement's definitions, or a login exchange.
/// Not thread-safe: its connection calls it under the connection's lock.
/// </summary>
internal sealed class MySqlSession
{
    private readonly Queue<Response> _pending = new();
    private Step _step;
    private ulong _left;
    private bool _deprecateEof;

    /// <summary>What ends the response to a command.</summary>
    private enum Response
    {
        /// <summary>One packet: OK, ERR, EOF or a string (COM_STATISTICS).</summary>
        Single,

        /// <summary>OK, ERR, LOCAL INFILE exchange or result sets, chained by SERVER_MORE_RESULTS_EXISTS.</summary>
        Result,

        /// <summary>COM_STMT_PREPARE: ERR, or an OK followed by parameter and column definitions.</summary>
        Prepare,

        /// <summary>Packets up to ERR or a terminator (COM_STMT_FETCH rows, COM_FIELD_LIST definitions).</summary>
        Rows,

        /// <summary>COM_CHANGE_USER: an authentication exchange up to OK or ERR.</summary>
        Auth,

        /// <summary>A binary log dump: packets until the server closes; the session is never idle.</summary>
        Stream,
    }

    private enum Step
    {
        First,
        ColumnDefinitions,
        ColumnsEof,
        Rows,
        Definitions,
    }

    /// <summary>The server accepted the login (its first OK).</summary>
    public bool Authenticated { get; private set; }

    /// <summary>Status flags of the last OK or EOF packet.</summary>
    public ushort Status { get; private set; }

    public bool InTransaction => (Status & MySqlWire.StatusInTransaction) != 0;

    /// <summary>Every command sent has had its whole response reported.</summary>
    public bool AwaitingNothing => _pending.Count == 0;

    /// <summary>Capabilities both sides agreed on (the server's greeting, as passed on, and the client's answer).</summary>
    public void Negotiated(uint capabilities) => _deprecateEof = (capabilities & MySqlWire.ClientDeprecateEof) != 0;

    public void OnClientPacket(in MySqlPacket packet)
    {
        // A command starts with sequence 0; anything else is login, authentication-switch or
        // LOCAL INFILE data, or the rest of a payload larger than one packet.
        if (packet.Continuation || packet.Sequence != 0 || packet.Length == 0)
        {
            return;
        }

        Response? response = packet.First switch
        {
            MySqlWire.ComQuit or MySqlWire.ComStmtSendLongData or MySqlWire.ComStmtClose => null,
            MySqlWire.ComQuery or MySqlWire.ComStmtExecute or MySqlWire.ComStmtBulkExecute or MySqlWire.ComProcessInfo => Response.Result,
            MySqlWire.ComFieldList or MySqlWire.ComStmtFetch => Response.Rows,
            MySqlWire.ComStmtPrepare => Response.Prepare,
            MySqlWire.ComChangeUser => Response.Auth,
            MySqlWire.ComBinlogDump or MySqlWire.ComTableDump or MySqlWire.ComBinlogDumpGtid => Response.Stream,
            _ => Response.Single, // COM_PING, COM_INIT_DB, COM_RESET_CONNECTION, …, and unknown ones (answered by ERR)
        };

        if (response is { } expected)
        {
            _pending.Enqueue(expected);
        }
    }

    public void OnServerPacket(in MySqlPacket packet)
    {
        if (packet.Continuation)
        {
            return;
        }

        var first = packet.First;
        if (!Authenticated)
        {
            // Login: authentication switch (0xFE) and more-data (0x01) packets go on until OK or ERR.
            if (first == MySqlWire.Ok)
            {
                Authenticated = true;
                Status = MySqlWire.OkStatus(packet.Head) ?? Status;
            }

            return;
        }

        if (!_pending.TryPeek(out var response))
        {
            // Unasked: the server's ERR before it closes the connection.
            return;
        }

        switch (response)
        {
            case Response.Single:
                if (first == MySqlWire.Ok)
                {
                    Status = MySqlWire.OkStatus(packet.Head) ?? Status;
                }

                Complete();
                break;
            case Response.Auth:
                if (first == MySqlWire.Ok)
                {
                    Status = MySqlWire.OkStatus(packet.Head) ?? Status;
                    Complete();
                }
                else if (first == MySqlWire.Err)
                {
                    Complete();
                }

                break;
            case Response.Rows:
                if (first == MySqlWire.Err)
                {
                    Complete();
                }
                else if (IsTerminator(packet))
                {
                    Status = TerminatorStatus(packet) ?? Status;
                    Complete();
                }

                break;
            case Response.Prepare:
                OnPrepare(packet);
                break;
            case Response.Result:
                OnResult(packet);
                break;
            case Response.Stream:
                break;
        }
    }

    private void OnPrepare(in MySqlPacket packet)
    {
        if (_step == Step.Definitions)
        {
            if (--_left == 0)
            {
                Complete();
            }

            return;
        }

        if (packet.First != MySqlWire.Ok || packet.Head.Length < 9)
        {
            Complete();
            return;
        }

        // OK: statement id (4), columns (2), parameters (2); then each group of definitions,
        // followed by an EOF unless CLIENT_DEPRECATE_EOF.
        var columns = (ulong)(packet.Head[5] | packet.Head[6] << 8);
        var parameters = (ulong)(packet.Head[7] | packet.Head[8] << 8);
        var eofs = _deprecateEof ? 0UL : (columns > 0 ? 1UL : 0) + (parameters > 0 ? 1UL : 0);
        _left = columns + parameters + eofs;
        if (_left == 0)
        {
            Complete();
        }
        else
        {
            _step = Step.Definitions;
        }
    }

    private void OnResult(in MySqlPacket packet)
    {
        var first = packet.First;
        switch (_step)
        {
            case Step.First:
                if (first == MySqlWire.Err)
                {
                    Complete();
                }
                else if (first == MySqlWire.Ok || first == MySqlWire.Eof)
                {
                    Status = MySqlWire.OkStatus(packet.Head) ?? Status;
                    EndResult();
                }
                else if (first != MySqlWire.LocalInfile)
                {
                    // A column count; after LOCAL INFILE the client sends the file and the server answers OK or ERR.
                    _left = MySqlWire.LengthEncoded(packet.Head) ?? 0;
                    _step = _left > 0 ? Step.ColumnDefinitions : (_deprecateEof ? Step.Rows : Step.ColumnsEof);
                }

                break;
            case Step.ColumnDefinitions:
                if (--_left == 0)
                {
                    _step = _deprecateEof ? Step.Rows : Step.ColumnsEof;
                }

                break;
            case Step.ColumnsEof:
                if (first == MySqlWire.Err)
                {
                    Complete();
                    break;
                }

                Status = MySqlWire.EofStatus(packet.Head) ?? Status;
                if ((Status & MySqlWire.StatusCursorExists) != 0)
                {
                    // A cursor: the rows come later, one COM_STMT_FETCH at a time.
                    EndResult();
                }
                else
                {
                    _step = Step.Rows;
                }

                break;
            case Step.Rows:
                if (first == MySqlWire.Err)
                {
                    Complete();
                }
                else if (IsTerminator(packet))
                {
                    Status = TerminatorStatus(packet) ?? Status;
                    EndResult();
                }

                break;
            case Step.Definitions:
                break;
        }
    }

    /// <summary>One result ended: another follows when the server said so, else the command is answered.</summary>
    private void EndResult()
    {
        if ((Status & MySqlWire.StatusMoreResults) != 0)
        {
            _step = Step.First;
        }
        else
        {
            Complete();
        }
    }

    private void Complete()
    {
        _pending.Dequeue();
        _step = Step.First;
        _left = 0;
    }

    /// <summary>
    /// 0xFE ends rows: an EOF (under 9 bytes), or an OK with that header under
    /// CLIENT_DEPRECATE_EOF. A row can start with 0xFE only as an 8-byte length prefix of a
    /// value of 16 MiB or more, which makes its packet a full one.
    /// </summary>
    private bool IsTerminator(in MySqlPacket packet) =>
        packet.First == MySqlWire.Eof && (_deprecateEof ? packet.Length < MySqlWire.MaxPayload : packet.Length < 9);

    private ushort? TerminatorStatus(in MySqlPacket packet) =>
        _deprecateEof ? MySqlWire.OkStatus(packet.Head) : MySqlWire.EofStatus(packet.Head);
}
