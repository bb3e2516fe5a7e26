//! Message kinds as types. Every tag byte, transaction status and field code the broker
//! reads or writes is named here once; the rest of the crate matches these enums, never raw
//! bytes. Each enum keeps the bytes it does not name (`Other`), so a message of a kind the
//! broker does not act on is still relayed untouched.

/// Declares a byte-coded enum with a total, allocation-free mapping in both directions.
macro_rules! byte_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $byte:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A byte not named above, kept as it came.
            Other(u8),
        }

        impl $name {
            /// The kind a byte stands for.
            #[inline]
            pub const fn of(byte: u8) -> Self {
                match byte {
                    $($byte => Self::$variant,)*
                    other => Self::Other(other),
                }
            }

            /// The byte on the wire.
            #[inline]
            pub const fn byte(self) -> u8 {
                match self {
                    $(Self::$variant => $byte,)*
                    Self::Other(other) => other,
                }
            }
        }

        impl From<$name> for u8 {
            #[inline]
            fn from(kind: $name) -> u8 {
                kind.byte()
            }
        }
    };
}

byte_enum! {
    /// What a client (frontend) message is, by its tag.
    ClientMsg {
        /// Simple-protocol query.
        Query = b'Q',
        /// Extended protocol: prepare a statement.
        Parse = b'P',
        /// Extended protocol: bind a portal.
        Bind = b'B',
        /// Extended protocol: describe a statement or portal.
        Describe = b'D',
        /// Extended protocol: run a portal.
        Execute = b'E',
        /// Legacy fast-path function call.
        FunctionCall = b'F',
        /// Close a statement or portal.
        Close = b'C',
        /// End of an extended-protocol batch.
        Sync = b'S',
        /// Ask for the replies so far.
        Flush = b'H',
        /// COPY FROM STDIN data.
        CopyData = b'd',
        /// COPY FROM STDIN end.
        CopyDone = b'c',
        /// COPY FROM STDIN abort.
        CopyFail = b'f',
        /// Close the session.
        Terminate = b'X',
        /// A password, SASL or GSS response during authentication.
        Password = b'p',
    }
}

byte_enum! {
    /// What a server (backend) message is, by its tag.
    ServerMsg {
        /// Reply to Parse.
        ParseComplete = b'1',
        /// Reply to Bind.
        BindComplete = b'2',
        /// Reply to Close.
        CloseComplete = b'3',
        /// A statement's parameter types (Describe of a statement).
        ParameterDescription = b't',
        /// A result's columns.
        RowDescription = b'T',
        /// Describe of something that returns no rows.
        NoData = b'n',
        /// One result row.
        DataRow = b'D',
        /// A statement finished.
        CommandComplete = b'C',
        /// An empty query string.
        EmptyQuery = b'I',
        /// Execute stopped at its row limit.
        PortalSuspended = b's',
        /// An error (or FATAL).
        Error = b'E',
        /// A notice or warning.
        Notice = b'N',
        /// The server is ready for the next query; carries the transaction status.
        Ready = b'Z',
        /// COPY FROM STDIN begins.
        CopyIn = b'G',
        /// COPY TO STDOUT begins.
        CopyOut = b'H',
        /// Streaming replication copy.
        CopyBoth = b'W',
        /// COPY TO STDOUT data.
        CopyData = b'd',
        /// COPY TO STDOUT end.
        CopyDone = b'c',
        /// A run-time parameter's value.
        ParameterStatus = b'S',
        /// LISTEN/NOTIFY notification.
        Notification = b'A',
        /// An authentication request or outcome.
        Authentication = b'R',
        /// The key a cancel request names.
        BackendKeyData = b'K',
        /// Reply to a fast-path function call.
        FunctionResult = b'V',
        /// The server's protocol minor version and unknown options.
        NegotiateVersion = b'v',
    }
}

impl ServerMsg {
    /// Whether the message belongs to a statement's reply (rather than being a notice or a
    /// parameter change the server may send at any time).
    #[inline]
    pub const fn is_reply(self) -> bool {
        !matches!(self, ServerMsg::Notice | ServerMsg::ParameterStatus)
    }
}

byte_enum! {
    /// The transaction status ReadyForQuery reports.
    TxStatus {
        /// Not in a transaction block.
        Idle = b'I',
        /// In a transaction block.
        InBlock = b'T',
        /// In a failed transaction block.
        Failed = b'E',
    }
}

impl TxStatus {
    /// Outside any transaction block. An unknown status counts as inside one: the
    /// connection is then never lent to another client.
    #[inline]
    pub const fn is_idle(self) -> bool {
        matches!(self, TxStatus::Idle)
    }
}

byte_enum! {
    /// What a Describe or Close names.
    NameKind {
        /// A prepared statement.
        Statement = b'S',
        /// A portal.
        Portal = b'P',
    }
}

byte_enum! {
    /// A field of an ErrorResponse or NoticeResponse.
    Field {
        /// Severity, possibly localized.
        Severity = b'S',
        /// Severity, never localized.
        SeverityRaw = b'V',
        /// SQLSTATE.
        Code = b'C',
        /// The primary message.
        Message = b'M',
        /// Detail.
        Detail = b'D',
        /// Hint.
        Hint = b'H',
        /// Context.
        Context = b'W',
    }
}

byte_enum! {
    /// A server's one-byte answer to an SSLRequest or GSSENCRequest.
    SslAnswer {
        /// Go ahead with the handshake.
        Accept = b'S',
        /// Not offered: go on in plain text (or give up).
        Refuse = b'N',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        for b in 0..=u8::MAX {
            assert_eq!(ClientMsg::of(b).byte(), b);
            assert_eq!(ServerMsg::of(b).byte(), b);
            assert_eq!(TxStatus::of(b).byte(), b);
        }
        assert_eq!(ServerMsg::of(b'Z'), ServerMsg::Ready);
        assert_eq!(ClientMsg::of(b'Q'), ClientMsg::Query);
        assert_eq!(ClientMsg::of(b'?'), ClientMsg::Other(b'?'));
        assert!(!TxStatus::of(b'?').is_idle());
    }
}
