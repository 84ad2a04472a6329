//! Just enough RESP2 to hold a sharded pub/sub connection to one cluster
//! node: encoding commands and incrementally decoding what the server sends
//! in subscribed mode (arrays of bulk strings, errors, integers).
//!
//! redis-rs offers `SSUBSCRIBE` only on a whole-cluster connection, which
//! ties every channel to every master; a reader per master needs its own.

use bytes::{Buf, BytesMut};

/// A decoded RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Frame {
    /// `+OK`
    Simple(String),
    /// `-MOVED 3999 127.0.0.1:6381`
    Error(String),
    /// `:1`
    Integer(i64),
    /// `$3 foo`; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*2 ...`; `None` for the null array.
    Array(Option<Vec<Frame>>),
}

impl Frame {
    /// The bytes of a bulk or simple string.
    pub(super) fn into_bytes(self) -> Option<Vec<u8>> {
        match self {
            Self::Bulk(bytes) => bytes,
            Self::Simple(text) => Some(text.into_bytes()),
            _ => None,
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub(super) fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Why a buffer could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Malformed;

/// Decodes one frame from the front of `buf`, consuming it; `Ok(None)` when
/// the frame is not complete yet (nothing consumed).
///
/// # Errors
/// [`Malformed`] when the bytes are not RESP2.
pub(super) fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, Malformed> {
    match parse(buf, 0)? {
        Some((frame, used)) => {
            buf.advance(used);
            Ok(Some(frame))
        }
        None => Ok(None),
    }
}

/// Parses a frame at `at`; returns it and the offset just past it.
fn parse(buf: &[u8], at: usize) -> Result<Option<(Frame, usize)>, Malformed> {
    let Some((line, next)) = line(buf, at) else {
        return Ok(None);
    };
    let (kind, rest) = line.split_first().ok_or(Malformed)?;
    let text = || String::from_utf8_lossy(rest).into_owned();
    match kind {
        b'+' => Ok(Some((Frame::Simple(text()), next))),
        b'-' => Ok(Some((Frame::Error(text()), next))),
        b':' => Ok(Some((Frame::Integer(number(rest)?), next))),
        b'$' => {
            let len = number(rest)?;
            if len < 0 {
                return Ok(Some((Frame::Bulk(None), next)));
            }
            let len = usize::try_from(len).map_err(|_| Malformed)?;
            let end = next + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(Malformed);
            }
            Ok(Some((Frame::Bulk(Some(buf[next..end].to_vec())), end + 2)))
        }
        b'*' => {
            let count = number(rest)?;
            if count < 0 {
                return Ok(Some((Frame::Array(None), next)));
            }
            let mut items = Vec::with_capacity(usize::try_from(count.min(1024)).unwrap_or(0));
            let mut at = next;
            for _ in 0..count {
                match parse(buf, at)? {
                    Some((item, after)) => {
                        items.push(item);
                        at = after;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Frame::Array(Some(items)), at)))
        }
        _ => Err(Malformed),
    }
}

/// The line starting at `at` (without CRLF) and the offset after its CRLF.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn number(digits: &[u8]) -> Result<i64, Malformed> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_push_messages_split_anywhere() {
        let wire = b"*3\r\n$8\r\nsmessage\r\n$3\r\nch1\r\n$5\r\nhello\r\n-MOVED 1 h:1\r\n:7\r\n";
        let expected = [
            Frame::Array(Some(vec![
                Frame::Bulk(Some(b"smessage".to_vec())),
                Frame::Bulk(Some(b"ch1".to_vec())),
                Frame::Bulk(Some(b"hello".to_vec())),
            ])),
            Frame::Error("MOVED 1 h:1".into()),
            Frame::Integer(7),
        ];
        // Fed one byte at a time: every prefix is "incomplete", never wrong.
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in wire {
            buf.extend_from_slice(&[*byte]);
            while let Some(frame) = decode(&mut buf).unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames, expected);
        assert!(buf.is_empty());
    }

    #[test]
    fn encodes_binary_safe_commands_and_refuses_garbage() {
        assert_eq!(
            encode(&[b"SSUBSCRIBE", b"a\r\nb"]),
            b"*2\r\n$10\r\nSSUBSCRIBE\r\n$4\r\na\r\nb\r\n"
        );
        let mut buf = BytesMut::from(&b"?what\r\n"[..]);
        assert_eq!(decode(&mut buf), Err(Malformed));
    }
}
