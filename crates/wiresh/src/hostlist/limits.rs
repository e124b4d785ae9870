//! How much one host list may ask for; checked before anything is made.

/// Most hosts one list may name: a typo such as `h[1-10000000]` gets an
/// error instead of eating the memory.
pub const MAX_HOSTS: usize = 100_000;

/// Longest host name a list may make, `:PORT` included: DNS's 253
/// characters and `:65535`.
pub const MAX_NAME_LEN: usize = 253 + ":65535".len();

/// Most names a list may spell out counting repeats (and numbers its
/// stepped ranges list), so that a short list of much-overlapping parts
/// cannot take long: room for the cap and two overlapping spellings of it.
pub(super) const MAX_WORK: u64 = 3 * MAX_HOSTS as u64;
