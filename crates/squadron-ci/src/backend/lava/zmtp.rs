//! A minimal ZeroMQ subscriber: ZMTP 3.0 over TCP with the NULL security
//! mechanism, subscribed to every message, with ZMTP 3.1 heartbeats.
//!
//! This is all older LAVA labs need (their `lava-publisher` PUB socket),
//! and squadron keeps it in-house because the pure-Rust `zeromq` crate
//! neither sends heartbeats nor understands the `PING` commands libzmq
//! sends: LAVA's publisher sets `HEARTBEAT_IVL`, so every such subscriber
//! would be disconnected within seconds (see `docs/ci.md`).
//!
//! The subscriber announces ZMTP 3.0, so a libzmq publisher takes its
//! subscription in the 3.0 form (a message `\x01<prefix>`); it answers
//! `PING` with `PONG`, sends a `PING` every [`PING_EVERY`] and gives up when
//! nothing has arrived for [`SILENCE_LIMIT`] (SQUAD's `HEARTBEAT_IVL` 1 s,
//! `HEARTBEAT_TIMEOUT` 10 s).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// How often the subscriber pings the publisher.
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// How long the publisher may stay silent before the connection is dead.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(10);
/// The largest message accepted, all parts together (LAVA's events are a
/// few hundred bytes).
const MAX_MESSAGE: usize = 16 << 20;

/// Frame flags (ZMTP 3.0 §"Framing").
const MORE: u8 = 0x01;
const LONG: u8 = 0x02;
const COMMAND: u8 = 0x04;

/// Why a subscription failed.
#[derive(Debug, thiserror::Error)]
pub enum ZmtpError {
    /// The connection failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not ZMTP 3 with NULL security.
    #[error("the publisher broke the ZeroMQ protocol: {0}")]
    Protocol(String),
    /// The peer sent an `ERROR` command.
    #[error("the publisher refused the subscription: {0}")]
    Refused(String),
    /// Nothing arrived for [`SILENCE_LIMIT`].
    #[error("the publisher was silent for {0:?}")]
    Silent(Duration),
}

/// One frame.
#[derive(Debug, PartialEq)]
struct Frame {
    more: bool,
    command: bool,
    body: Vec<u8>,
}

/// The frame at the start of `buffer` and its length on the wire, or
/// `None` if it is not all there yet.
fn parse_frame(buffer: &[u8]) -> Result<Option<(Frame, usize)>, ZmtpError> {
    let Some(&flags) = buffer.first() else { return Ok(None) };
    if flags & !(MORE | LONG | COMMAND) != 0 {
        return Err(ZmtpError::Protocol(format!("a frame with reserved flags {flags:#04x}")));
    }
    let (size, header) = if flags & LONG != 0 {
        let Some(bytes) = buffer.get(1..9) else { return Ok(None) };
        (u64::from_be_bytes(bytes.try_into().expect("8 bytes")), 9)
    } else {
        let Some(&size) = buffer.get(1) else { return Ok(None) };
        (u64::from(size), 2)
    };
    if size > MAX_MESSAGE as u64 {
        return Err(ZmtpError::Protocol(format!("a frame of {size} bytes")));
    }
    let end = header + size as usize;
    let Some(body) = buffer.get(header..end) else { return Ok(None) };
    Ok(Some((Frame { more: flags & MORE != 0, command: flags & COMMAND != 0, body: body.to_vec() }, end)))
}

/// A frame on the wire.
fn encode_frame(command: bool, body: &[u8]) -> Vec<u8> {
    let flags = if command { COMMAND } else { 0 };
    let mut frame = Vec::with_capacity(body.len() + 9);
    match u8::try_from(body.len()) {
        Ok(size) => frame.extend([flags, size]),
        Err(_) => {
            frame.push(flags | LONG);
            frame.extend((body.len() as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(body);
    frame
}

/// A command's name and the rest of its body.
fn command(body: &[u8]) -> Result<(&[u8], &[u8]), ZmtpError> {
    let length = usize::from(*body.first().ok_or_else(|| ZmtpError::Protocol("an empty command".into()))?);
    let name = body.get(1..1 + length).ok_or_else(|| ZmtpError::Protocol("a truncated command".into()))?;
    Ok((name, &body[1 + length..]))
}

/// The 64-byte greeting of a ZMTP 3.0 client with NULL security.
fn greeting() -> [u8; 64] {
    let mut greeting = [0u8; 64];
    // Signature: 0xFF, 8 bytes of padding (libzmq's: a routing-id length
    // of 1, for ZMTP 1.0 peers), 0x7F; then version 3.0.
    greeting[0] = 0xff;
    greeting[8] = 0x01;
    greeting[9] = 0x7f;
    greeting[10] = 3;
    greeting[11] = 0;
    greeting[12..16].copy_from_slice(b"NULL");
    // as-server (32) and the filler stay zero.
    greeting
}

/// A subscription to everything a ZeroMQ PUB socket publishes.
pub struct Subscriber<S> {
    stream: S,
    /// Bytes received and not yet made into frames.
    buffer: Vec<u8>,
    /// The parts of the message being received.
    parts: Vec<Vec<u8>>,
    /// Its size so far.
    size: usize,
    ping: Interval,
    /// When the publisher will have been silent too long.
    silent_at: Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Subscriber<S> {
    /// Greets the publisher on `stream`, performs the NULL handshake and
    /// subscribes to every topic. Callers bound the time it takes.
    pub async fn subscribe(mut stream: S) -> Result<Subscriber<S>, ZmtpError> {
        stream.write_all(&greeting()).await?;
        let mut theirs = [0u8; 64];
        stream.read_exact(&mut theirs).await?;
        if theirs[0] != 0xff || theirs[9] != 0x7f {
            return Err(ZmtpError::Protocol("not a ZeroMQ greeting".into()));
        }
        if theirs[10] < 3 {
            return Err(ZmtpError::Protocol(format!("ZMTP {}.{} (3.0 or later needed)", theirs[10], theirs[11])));
        }
        if &theirs[12..32] != b"NULL\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0" {
            let mechanism = String::from_utf8_lossy(&theirs[12..32]).trim_end_matches('\0').to_string();
            return Err(ZmtpError::Protocol(format!("the {mechanism:?} security mechanism (only NULL is supported)")));
        }
        let mut ready = b"\x05READY\x0bSocket-Type".to_vec();
        ready.extend(3u32.to_be_bytes());
        ready.extend(b"SUB");
        stream.write_all(&encode_frame(true, &ready)).await?;
        let mut subscriber = Subscriber {
            stream,
            buffer: Vec::new(),
            parts: Vec::new(),
            size: 0,
            ping: tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY),
            silent_at: Instant::now() + SILENCE_LIMIT,
        };
        subscriber.ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let frame = loop {
            if let Some(frame) = subscriber.take_frame()? {
                break frame;
            }
            if subscriber.stream.read_buf(&mut subscriber.buffer).await? == 0 {
                return Err(ZmtpError::Protocol("the publisher closed the connection during the handshake".into()));
            }
        };
        match (frame.command, command(&frame.body)?) {
            (true, (b"READY", _)) => {}
            (true, (b"ERROR", reason)) => return Err(ZmtpError::Refused(error_reason(reason))),
            _ => return Err(ZmtpError::Protocol("no READY command after the greeting".into())),
        }
        // Subscribe to every topic: the empty prefix, in ZMTP 3.0's form.
        subscriber.stream.write_all(&encode_frame(false, b"\x01")).await?;
        Ok(subscriber)
    }

    /// The next frame already received, if whole.
    fn take_frame(&mut self) -> Result<Option<Frame>, ZmtpError> {
        let Some((frame, length)) = parse_frame(&self.buffer)? else { return Ok(None) };
        self.buffer.drain(..length);
        Ok(Some(frame))
    }

    /// The next message, as its parts; `None` when the publisher closed
    /// the connection.
    pub async fn next(&mut self) -> Result<Option<Vec<Vec<u8>>>, ZmtpError> {
        loop {
            while let Some(frame) = self.take_frame()? {
                self.silent_at = Instant::now() + SILENCE_LIMIT;
                if frame.command {
                    self.command(&frame.body).await?;
                    continue;
                }
                self.size += frame.body.len();
                if self.size > MAX_MESSAGE {
                    return Err(ZmtpError::Protocol(format!("a message of more than {MAX_MESSAGE} bytes")));
                }
                self.parts.push(frame.body);
                if !frame.more {
                    self.size = 0;
                    return Ok(Some(std::mem::take(&mut self.parts)));
                }
            }
            tokio::select! {
                read = self.stream.read_buf(&mut self.buffer) => {
                    if read? == 0 {
                        return Ok(None);
                    }
                }
                _ = self.ping.tick() => {
                    // PING: no TTL asked of the publisher, no context.
                    self.stream.write_all(&encode_frame(true, b"\x04PING\x00\x00")).await?;
                }
                _ = tokio::time::sleep_until(self.silent_at) => return Err(ZmtpError::Silent(SILENCE_LIMIT)),
            }
        }
    }

    /// Answers a command: `PING` gets its `PONG`, `ERROR` ends the
    /// subscription, anything else (`PONG`, …) only shows the peer is alive.
    async fn command(&mut self, body: &[u8]) -> Result<(), ZmtpError> {
        match command(body)? {
            (b"PING", rest) => {
                // The TTL (2 bytes) then up to 16 bytes of context to echo.
                let context = rest.get(2..).unwrap_or_default();
                let mut pong = b"\x04PONG".to_vec();
                pong.extend_from_slice(&context[..context.len().min(16)]);
                self.stream.write_all(&encode_frame(true, &pong)).await?;
            }
            (b"ERROR", reason) => return Err(ZmtpError::Refused(error_reason(reason))),
            _ => {}
        }
        Ok(())
    }
}

/// The reason of an `ERROR` command (one length byte, then text).
fn error_reason(body: &[u8]) -> String {
    let text = body.get(1..).unwrap_or_default();
    String::from_utf8_lossy(&text[..text.len().min(usize::from(body.first().copied().unwrap_or(0)))]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_short_and_long() {
        for size in [0, 1, 255, 256, 70_000] {
            let body = vec![7u8; size];
            let wire = encode_frame(size % 2 == 0, &body);
            let (frame, length) = parse_frame(&wire).unwrap().unwrap();
            assert_eq!(length, wire.len());
            assert_eq!(frame, Frame { more: false, command: size % 2 == 0, body });
            assert!(parse_frame(&wire[..wire.len() - 1]).unwrap().is_none());
        }
    }

    #[test]
    fn bad_frames_are_protocol_errors() {
        assert!(matches!(parse_frame(&[0x40, 0]), Err(ZmtpError::Protocol(_))));
        let mut huge = vec![LONG];
        huge.extend((u64::MAX).to_be_bytes());
        assert!(matches!(parse_frame(&huge), Err(ZmtpError::Protocol(_))));
        assert!(matches!(command(&[9, b'P']), Err(ZmtpError::Protocol(_))));
    }

    #[test]
    fn the_greeting_is_zmtp_3_0_null() {
        let greeting = greeting();
        assert_eq!(&greeting[..12], b"\xff\0\0\0\0\0\0\0\x01\x7f\x03\x00");
        assert_eq!(&greeting[12..17], b"NULL\0");
        assert_eq!(error_reason(b"\x05nope!trailing"), "nope!");
    }
}
