//! How large a frame may be: what the codec enforces and `hello` announces.

/// Size limits enforced by the codec in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest JSON header accepted, in bytes.
    pub max_header: usize,
    /// Largest frame body accepted, in bytes.
    pub max_body: usize,
}

impl Limits {
    /// What an unauthenticated peer may send: one small `auth` frame. A
    /// stranger cannot make the server buffer or parse more than this.
    pub const PRE_AUTH: Limits = Limits {
        max_header: 4096,
        max_body: 0,
    };

    /// Default header limit: 64 KiB.
    pub const DEFAULT_MAX_HEADER: usize = 64 * 1024;
    /// Default body limit: 1 MiB.
    pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header: Self::DEFAULT_MAX_HEADER,
            max_body: Self::DEFAULT_MAX_BODY,
        }
    }
}
