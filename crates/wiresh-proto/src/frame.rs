//! A frame: one message and the bytes that travel with it.

use bytes::Bytes;

use crate::message::Message;

/// One unit on the wire: a [`Message`] header and its (possibly empty) body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What this frame means.
    pub message: Message,
    /// Payload bytes: output, input or ping data. Empty for most messages.
    pub body: Bytes,
}

impl Frame {
    /// A frame with no body.
    pub fn new(message: Message) -> Self {
        Frame {
            message,
            body: Bytes::new(),
        }
    }

    /// A frame with a body.
    pub fn with_body(message: Message, body: impl Into<Bytes>) -> Self {
        Frame {
            message,
            body: body.into(),
        }
    }
}

impl From<Message> for Frame {
    fn from(message: Message) -> Self {
        Frame::new(message)
    }
}
