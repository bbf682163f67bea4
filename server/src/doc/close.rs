//! Why the server closes a WebSocket: the close frame's code and reason.

/// Why the server closes a WebSocket, as a close frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
}

impl CloseReason {
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const UNSUPPORTED: u16 = 1003;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const GOING_AWAY: u16 = 1001;
    pub const INTERNAL: u16 = 1011;
    /// Storage cannot take the connection's update now; reconnect and resend.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const DELETED: u16 = 4404;

    /// A stable label for the rejected-frames metric.
    pub fn label(&self) -> &'static str {
        match self.code {
            Self::INVALID_PAYLOAD => "invalid_payload",
            Self::UNSUPPORTED => "unsupported",
            Self::POLICY => "policy",
            Self::TOO_BIG => "too_big",
            Self::TRY_AGAIN_LATER => "storage_unavailable",
            _ => "other",
        }
    }

    /// Close reasons are limited to 123 bytes by RFC 6455.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > 123 {
            let mut cut = 120;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push_str("...");
        }
        CloseReason { code, reason }
    }
}
