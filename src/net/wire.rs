//! The socket under a native WebSocket, shared between the connection's
//! task and the fan-out's direct writes.
//!
//! The task reads and writes through tungstenite over [`WireIo`], except
//! its replies, which it writes with [`Wire::write_frame`] so that they never
//! grow tungstenite's write buffer; the fan-out writes whole frames with
//! [`Wire::write_now`] (the [`DirectWrite`] of the core's outbox) while the
//! task is idle: the frame header goes next to the payload every recipient
//! shares, in one vectored `write`, and nothing waits. All paths write under
//! one lock, so their frames never interleave inside one another:
//!
//! - a direct write that the socket takes only partly keeps the rest as the
//!   *tail*, which every later write (either path) sends first;
//! - a write of tungstenite's buffer that the socket takes only partly marks
//!   the wire *dirty* (tungstenite is in the middle of its frames) until a
//!   later one completes; no direct write starts while it is.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::protocol::{Role, WebSocketConfig},
};

use crate::core::{Delivery, DirectWrite, Written};

/// How a transport frames one delivery for a direct write.
#[derive(Debug)]
pub enum Framed<'a> {
    /// One WebSocket data frame: its opcode (`0x1` text, `0x2` binary) and
    /// the payload every recipient of the format shares.
    Frame(u8, &'a Bytes),
    /// Not deliverable (it cannot be encoded): counted by the transport and
    /// skipped.
    Skip,
    /// Deliverable, but not by a direct write (it needs more than one frame):
    /// left for the connection's task.
    Task,
}

/// A transport's framing of deliveries for its format.
pub type Framing = fn(&Delivery) -> Framed<'_>;

/// Frames one vectored write carries at most.
const MAX_FRAMES: usize = 16;

/// Longest server-to-client frame header: no mask, 64-bit length.
const MAX_HEAD: usize = 10;

/// One connection's socket.
#[derive(Debug)]
pub struct Wire {
    tcp: TcpStream,
    framing: Framing,
    state: Mutex<WireState>,
}

#[derive(Debug, Default)]
struct WireState {
    /// tungstenite's last write did not complete: it is inside its frames.
    dirty: bool,
    /// The rest of a frame a direct write began.
    // Boxed: rare, and every idle connection would pay for it inline.
    tail: Option<Box<Tail>>,
}

#[derive(Debug)]
struct Tail {
    head: [u8; MAX_HEAD],
    head_at: usize,
    head_len: usize,
    payload: Bytes,
}

impl Tail {
    fn slices(&self) -> [IoSlice<'_>; 2] {
        [
            IoSlice::new(
                self.head
                    .get(self.head_at..self.head_len)
                    .unwrap_or_default(),
            ),
            IoSlice::new(&self.payload),
        ]
    }

    /// Consumes `n` written bytes; true when nothing is left.
    fn advance(&mut self, mut n: usize) -> bool {
        let head = (self.head_len - self.head_at).min(n);
        self.head_at += head;
        n -= head;
        let _ = self.payload.split_to(n.min(self.payload.len()));
        self.head_at == self.head_len && self.payload.is_empty()
    }
}

impl Wire {
    /// Wraps a socket whose deliveries `framing` frames.
    pub fn new(tcp: TcpStream, framing: Framing) -> Self {
        Self {
            tcp,
            framing,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, WireState> {
        // Every critical section leaves the state consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends what is left of the tail; `Ok(true)` once none is left.
    fn write_tail(&self, state: &mut WireState) -> io::Result<bool> {
        while let Some(tail) = state.tail.as_mut() {
            let n = self.tcp.try_write_vectored(&tail.slices())?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            if tail.advance(n) {
                state.tail = None;
            }
        }
        Ok(true)
    }

    /// Sends the tail, waiting for the socket as a task does.
    fn poll_tail(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.write_tail(&mut self.lock()) {
                Ok(_) => return Poll::Ready(Ok(())),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_write_ready(cx))?;
                }
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl Wire {
    /// Writes one whole frame for the connection's task (a reply), after
    /// any kept tail, waiting for the socket as a task does. The caller has
    /// flushed tungstenite (the wire is not dirty) and holds the outbox, so
    /// no direct write runs meanwhile. Written this way a reply never
    /// passes through tungstenite's write buffer, which would keep its
    /// capacity (the size of the welcome) for the connection's whole life.
    ///
    /// Unlike tungstenite's own send, this does not know whether a close
    /// frame was sent or received: the caller sends no reply after either
    /// (the core ends the connection on both).
    ///
    /// # Cancel safety
    /// Cancel safe: what was not sent stays the tail, sent before anything
    /// else.
    pub async fn write_frame(&self, opcode: u8, payload: Bytes) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_tail(cx)).await?;
        let (head, head_len) = head(opcode, payload.len());
        self.lock().tail = Some(Box::new(Tail {
            head,
            head_at: 0,
            head_len,
            payload,
        }));
        std::future::poll_fn(|cx| self.poll_tail(cx)).await
    }
}

/// Takes an upgraded WebSocket's socket back from the HTTP server (herald's
/// own listener serves plain TCP) so that deliveries can be written to it
/// directly: the WebSocket over the [`Wire`], and the `Wire` for the
/// transport's direct writes. Any other stream comes back as it was.
pub async fn take_back(
    upgraded: hyper::upgrade::Upgraded,
    framing: Framing,
    config: WebSocketConfig,
) -> Result<(WebSocketStream<WireIo>, Arc<Wire>), hyper::upgrade::Upgraded> {
    let parts = upgraded.downcast::<TokioIo<TcpStream>>()?;
    // Copied, and the original dropped now: it is a slice of the HTTP
    // server's read buffer (several KiB), which every idle connection would
    // otherwise keep alive for its whole life.
    let early = parts.read_buf.to_vec();
    drop(parts.read_buf);
    let wire = Arc::new(Wire::new(parts.io.into_inner(), framing));
    let ws = WebSocketStream::from_partially_read(
        WireIo(Arc::clone(&wire)),
        early,
        Role::Server,
        Some(config),
    )
    .await;
    Ok((ws, wire))
}

/// The header of a final server-to-client frame of `len` bytes.
fn head(opcode: u8, len: usize) -> ([u8; MAX_HEAD], usize) {
    let mut head = [0u8; MAX_HEAD];
    head[0] = 0x80 | opcode;
    let n = if len < 126 {
        head[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        head[1] = 126;
        head[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (head, n)
}

impl DirectWrite for Wire {
    fn write_now(&self, batch: &mut dyn Iterator<Item = &Arc<Delivery>>) -> Written {
        let blocked = Written {
            done: 0,
            blocked: true,
        };
        let mut state = self.lock();
        if state.dirty || state.tail.is_some() {
            return blocked;
        }
        let mut heads = [([0u8; MAX_HEAD], 0usize); MAX_FRAMES];
        let mut payloads: [&Bytes; MAX_FRAMES] = [&EMPTY; MAX_FRAMES];
        // Deliveries consumed up to and including each frame (a delivery
        // that cannot be encoded is skipped, and counted as done).
        let mut through = [0usize; MAX_FRAMES];
        let mut frames = 0;
        let mut consumed = 0;
        let mut task = false;
        for delivery in &mut *batch {
            let (opcode, payload) = match (self.framing)(delivery) {
                Framed::Frame(opcode, payload) => (opcode, payload),
                Framed::Skip => {
                    consumed += 1;
                    continue;
                }
                Framed::Task => {
                    task = true;
                    break;
                }
            };
            consumed += 1;
            heads[frames] = head(opcode, payload.len());
            payloads[frames] = payload;
            through[frames] = consumed;
            frames += 1;
            if frames == MAX_FRAMES {
                break;
            }
        }
        if frames == 0 {
            return Written {
                done: consumed,
                blocked: task,
            };
        }
        let mut slices = [IoSlice::new(&[]); 2 * MAX_FRAMES];
        for i in 0..frames {
            let (head, len) = &heads[i];
            slices[2 * i] = IoSlice::new(&head[..*len]);
            slices[2 * i + 1] = IoSlice::new(payloads[i]);
        }
        let mut left = match self.tcp.try_write_vectored(&slices[..2 * frames]) {
            Ok(n) => n,
            // The task will meet a real error again and end the connection.
            Err(_) => return blocked,
        };
        for i in 0..frames {
            let (head, len) = heads[i];
            let size = len + payloads[i].len();
            if left >= size {
                left -= size;
                continue;
            }
            if left == 0 {
                let done = if i == 0 { 0 } else { through[i - 1] };
                return Written {
                    done,
                    blocked: true,
                };
            }
            // Partly written: keep the rest; it goes out before anything else.
            let mut tail = Tail {
                head,
                head_at: 0,
                head_len: len,
                payload: payloads[i].clone(),
            };
            tail.advance(left);
            state.tail = Some(Box::new(tail));
            return Written {
                done: through[i],
                blocked: true,
            };
        }
        // All of it went out; if the batch had more than one write carries,
        // the outbox calls again for the rest. A delivery for the task stops
        // the run here: the task takes it and what follows, in order.
        Written {
            done: consumed,
            blocked: task,
        }
    }
}

static EMPTY: Bytes = Bytes::new();

/// The socket as tungstenite's byte stream.
#[derive(Debug)]
pub struct WireIo(pub Arc<Wire>);

impl AsyncRead for WireIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.tcp.poll_read_ready(cx))?;
            match self.0.tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for WireIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let wire = &self.0;
        loop {
            let mut state = wire.lock();
            let written = wire
                .write_tail(&mut state)
                .and_then(|_| wire.tcp.try_write(buf));
            match written {
                Ok(n) => {
                    state.dirty = n < buf.len();
                    return Poll::Ready(Ok(n));
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    state.dirty = true;
                    drop(state);
                    ready!(wire.tcp.poll_write_ready(cx))?;
                }
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.poll_tail(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket closes when the last handle drops; what matters here is
        // that a kept tail goes out before the close frame's answer is awaited.
        self.0.poll_tail(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::{
        io::AsyncReadExt,
        net::{TcpListener, TcpStream},
    };

    use super::*;
    use crate::{
        core::{Delivery, Payload, WireFormat, slots},
        protocol::{ChannelName, EventName, JsonData, Publication},
    };

    /// Text frames of the publication's data, as JSON.
    static DATA: WireFormat<Bytes> = WireFormat::new(slots::NATIVE_JSON, |payload| match payload {
        Payload::Publication(p) => Some(Bytes::from(p.data.as_json()?.to_owned())),
        _ => None,
    });

    fn framing(delivery: &Delivery) -> Framed<'_> {
        delivery
            .encoded(&DATA)
            .map_or(Framed::Skip, |bytes| Framed::Frame(0x1, bytes))
    }

    async fn pair() -> (Arc<Wire>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Arc::new(Wire::new(server, framing)), client)
    }

    fn delivery(pad: usize) -> Arc<Delivery> {
        Arc::new(Delivery::publication(Publication {
            channel: ChannelName::parse("c", 128).unwrap(),
            event: EventName::parse("e").unwrap(),
            data: JsonData::from_json(&format!("\"{}\"", "x".repeat(pad))).unwrap(),
            ts: None,
            position: None,
            history: None,
        }))
    }

    /// Writes through the task's side until the socket takes only part.
    async fn fill(io: &mut WireIo) -> usize {
        let big = vec![0u8; 64 << 20];
        poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, &big))
            .await
            .unwrap()
    }

    /// Direct writes of `delivery` until the socket is full; the frames
    /// written (a frame begun and kept in part counts among them).
    fn write_until_full(wire: &Wire, delivery: &Arc<Delivery>) -> usize {
        let mut frames = 0;
        loop {
            let written = wire.write_now(&mut std::iter::once(delivery));
            frames += written.done;
            if written.blocked {
                return frames;
            }
        }
    }

    /// `count` frames of `delivery`'s payload, as the client reads them.
    fn frames_of(delivery: &Delivery, count: usize) -> Vec<u8> {
        let payload = delivery.encoded(&DATA).unwrap();
        let (head, len) = head(0x1, payload.len());
        let mut bytes = Vec::new();
        for _ in 0..count {
            bytes.extend_from_slice(&head[..len]);
            bytes.extend_from_slice(payload);
        }
        bytes
    }

    #[tokio::test]
    async fn no_direct_write_inside_a_partly_written_task_write() {
        let (wire, mut client) = pair().await;
        let mut io = WireIo(Arc::clone(&wire));
        let taken = fill(&mut io).await;
        assert!(taken < 64 << 20, "the socket took everything");
        // Room in the socket again, but tungstenite is inside its write.
        let mut sink = vec![0u8; taken];
        client.read_exact(&mut sink[..1 << 20]).await.unwrap();
        wire.tcp.writable().await.unwrap();
        let one = delivery(10);
        let written = wire.write_now(&mut std::iter::once(&one));
        assert_eq!(
            written,
            Written {
                done: 0,
                blocked: true
            }
        );
        // Once the task's write completes, direct writes may go again.
        client.read_exact(&mut sink[1 << 20..]).await.unwrap();
        let rest = poll_fn(|cx| Pin::new(&mut io).poll_write(cx, &[1, 2, 3]))
            .await
            .unwrap();
        assert_eq!(rest, 3);
        let written = wire.write_now(&mut std::iter::once(&one));
        assert_eq!(
            written,
            Written {
                done: 1,
                blocked: false
            }
        );
    }

    #[tokio::test]
    async fn a_partly_written_frame_is_finished_before_the_next_write() {
        let (wire, mut client) = pair().await;
        let mut io = WireIo(Arc::clone(&wire));
        // Fill the socket, then read back just enough for part of a frame.
        let taken = fill(&mut io).await;
        let mut sink = vec![0u8; taken];
        client.read_exact(&mut sink).await.unwrap();
        poll_fn(|cx| Pin::new(&mut io).poll_write(cx, b"ok"))
            .await
            .unwrap();
        let big = delivery(40_000);
        // Direct writes until the socket is full: the last one is usually
        // taken only partly, and its rest kept.
        let frames = write_until_full(&wire, &big);
        let mut expected = b"ok".to_vec();
        expected.extend(frames_of(&big, frames));
        expected.extend_from_slice(b"\x88\x00");
        // Room again: a direct write still waits for the kept rest.
        let mut received = vec![0u8; expected.len()];
        let room = 1 << 20;
        client.read_exact(&mut received[..room]).await.unwrap();
        wire.tcp.writable().await.unwrap();
        // (Unless the socket filled exactly at a frame's end: then no rest.)
        if wire.lock().tail.is_some() {
            let written = wire.write_now(&mut std::iter::once(&big));
            assert_eq!(written.done, 0, "a direct write overtook a kept rest");
        }
        // The task's next write goes after the rest of that frame.
        let writer = tokio::spawn(async move {
            poll_fn(|cx| Pin::new(&mut io).poll_write(cx, b"\x88\x00"))
                .await
                .unwrap();
            poll_fn(|cx| Pin::new(&mut io).poll_flush(cx))
                .await
                .unwrap();
        });
        client.read_exact(&mut received[room..]).await.unwrap();
        assert!(
            received == expected,
            "the byte stream is not whole frames in order"
        );
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_reply_frame_goes_out_whole_after_a_kept_rest() {
        let (wire, mut client) = pair().await;
        let big = delivery(40_000);
        // Direct writes until the socket is full, the last one usually kept
        // in part; then a reply, written while the client reads.
        let frames = write_until_full(&wire, &big);
        let reply = Bytes::from_static(br#"{"type":"ok","id":7}"#);
        let writer = {
            let wire = Arc::clone(&wire);
            let reply = reply.clone();
            tokio::spawn(async move { wire.write_frame(0x1, reply).await.unwrap() })
        };
        let (head_reply, len_reply) = head(0x1, reply.len());
        let mut expected = frames_of(&big, frames);
        expected.extend_from_slice(&head_reply[..len_reply]);
        expected.extend_from_slice(&reply);
        let mut received = vec![0u8; expected.len()];
        client.read_exact(&mut received).await.unwrap();
        writer.await.unwrap();
        assert!(
            received == expected,
            "the reply is not a whole frame after the rest"
        );
        assert!(wire.lock().tail.is_none(), "nothing may be left");
    }
}
