//! The wiresh wire protocol, with no I/O policy inside.
//!
//! TCP is a byte stream: writes stick together and split apart on the way.
//! This crate is the one place that knows how wiresh puts boundaries back:
//! every message is a [`Frame`] — a 4-byte big-endian header length, a JSON
//! header that says what the message is and how long its body is, then the
//! body bytes. [`FrameCodec`] turns any sequence of reads back into whole
//! frames and bounds every size before it allocates.
//!
//! What to do with frames (timeouts, authentication, running commands) is the
//! business of the server and client built on top of this crate.
//!
//! `docs/PROTOCOL.md` in the repository is the normative description.
//!
//! # Crate map
//! - [`frame`]: a message and its body.
//! - [`message`]: every message, error code and signal name, each wire name
//!   written once.
//! - [`codec`]: bytes to frames and back, with every size bounded first.
//! - [`limits`]: how large a frame may be.
//! - [`preamble`]: the 8 bytes a client opens with.
//! - [`legacy`]: the original Python protocol's header, encoded and decoded.

#![warn(missing_docs)]

pub mod codec;
pub mod frame;
pub mod legacy;
pub mod limits;
pub mod message;
pub mod preamble;

pub use codec::{BodyPassing, DecodeError, EncodeError, FrameCodec, Limits};
pub use frame::Frame;
pub use message::{
    ErrorCode, ExecRequest, ExitStatus, FileEntry, FileKind, Hello, Message, Program, PtyRequest,
    PutRequest, Secret, SignalName, TransferReady, WindowSize,
};
pub use preamble::{Preamble, PreambleError, PREAMBLE_LEN};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Default TCP port of a wiresh server.
pub const DEFAULT_PORT: u16 = 7878;
