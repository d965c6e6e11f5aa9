//! The codec of every generated service: prost's, with small starting
//! buffers.
//!
//! tonic gives each call an encoding buffer and a decoding buffer of its
//! codec's `buffer_size` (8 KiB by default) and keeps both, grown to the
//! largest message, for the call's life. The collector holds one
//! `Ingest.Stream` call per connected agent for days, whose replies (a
//! Welcome, then acknowledgements) take a few bytes each: a default-sized
//! encoding buffer is memory per agent for nothing, and a decoding buffer
//! that starts small grows to about twice the agent's messages (tonic
//! reserves a message's length again once it is buffered) instead of to
//! the next doubling of 8 KiB past that. Large messages (query answers,
//! an agent's backlog) grow their buffers as before.

use std::marker::PhantomData;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Starting size of a call's encoding and decoding buffers, in bytes: a
/// Welcome or an acknowledgement fits.
pub const BUFFER_BYTES: usize = 512;

/// Encoded messages are handed to HTTP/2 once this many bytes are
/// buffered (tonic's default).
const YIELD_THRESHOLD_BYTES: usize = 32 << 10;

/// prost's codec ([`tonic_prost::ProstCodec`]) with buffers of
/// [`BUFFER_BYTES`] to start with.
#[derive(Debug, Clone)]
pub struct ProstCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for ProstCodec<T, U> {
    fn default() -> Self {
        ProstCodec {
            _messages: PhantomData,
        }
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

impl<T, U> Codec for ProstCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
