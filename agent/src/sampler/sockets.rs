//! TCP connections by state, counted from the kernel's socket dump over
//! netlink `sock_diag`. Not `/proc/net/tcp`: the kernel formats that text
//! line by line under a lock, and reading it stalls at tens of thousands
//! of sockets.
//!
//! One dump covers IPv4 and IPv6: the original request
//! (`TCPDIAG_GETSOCK` with an `inet_diag_req`), which the kernel answers
//! for every address family in one walk of its TCP hash tables. The newer
//! `SOCK_DIAG_BY_FAMILY` request (`inet_diag_req_v2`) names one family,
//! so it takes two walks, and the walk, not the sockets, is the cost on a
//! host with few connections: the established table has a bucket per few
//! kilobytes of memory, empty or not. A kernel that refuses the original
//! request (`EINVAL`, `EOPNOTSUPP`, `ENOENT`) is asked per family from
//! then on.
//!
//! The kernel has no call that counts by state, so it sends one message
//! per socket; the request asks for no extension (`idiag_ext` = 0: no
//! memory, no `tcp_info`, no congestion names), so each is the bare 72-byte
//! `inet_diag_msg`, of which only the state byte is read. Replies come in
//! datagrams of at most 8 KiB (the kernel fills a page or two per
//! datagram), read into one reused buffer; the socket is kept open
//! between ticks, and reopened after any error (a half-read dump must not
//! leave its rest for the next one).
//!
//! Where netlink is refused (`EPERM`, `EACCES` under a seccomp or
//! container policy) or the `inet_diag` module is missing, each tick's
//! failure is counted (family `sockets`, which `[families]` can turn off)
//! and the other families go on.

#![cfg(target_os = "linux")]

use rustix::fd::OwnedFd;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::Samples;

/// TCP states by their kernel number (`include/net/tcp_states.h`), from 1.
const STATES: [&str; 11] = [
    "established",
    "syn_sent",
    "syn_recv",
    "fin_wait1",
    "fin_wait2",
    "time_wait",
    "close",
    "close_wait",
    "last_ack",
    "listen",
    "closing",
];

/// One bit per state in `STATES` (bits 1 to 11). The kernel adds request
/// sockets (`TCP_NEW_SYN_RECV`) when `SYN_RECV` is asked, and reports them
/// as `SYN_RECV`.
const ALL_STATES: u32 = ((1 << (STATES.len() + 1)) - 1) & !1;

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// The original request and its replies: every family at once.
const TCPDIAG_GETSOCK: u16 = 18;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const IPPROTO_TCP: u8 = 6;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// Large enough for any dump datagram: the kernel sizes them to
/// `NLMSG_GOODSIZE` (at most 8 KiB less overhead) unless the reader asks
/// for more.
const RECV_BUFFER: usize = 8192;
/// Bounds one dump: 100 000 datagrams of ~110 sockets each.
const MAX_RECVS: usize = 100_000;
/// A dump the kernel does not finish within this is abandoned.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the dumps come from.
#[derive(Debug, Clone, Default)]
pub enum SockDiagSource {
    /// The kernel, over netlink.
    #[default]
    Kernel,
    /// Recorded replies: the files `inet4` and `inet6` of this directory,
    /// each the datagrams of one dump, one after the other (`inet6` may
    /// be left out: a dump of every family is recorded as `inet4`).
    Recorded(PathBuf),
}

/// Why a dump gave no counts.
#[derive(Debug, thiserror::Error)]
pub(super) enum DiagError {
    #[error("netlink sock_diag: {0}")]
    Io(#[from] io::Error),
    #[error("netlink sock_diag: unexpected reply: {0}")]
    Malformed(String),
}

/// Which dump request the kernel is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Request {
    /// `TCPDIAG_GETSOCK`: IPv4 and IPv6 in one walk.
    Every,
    /// `SOCK_DIAG_BY_FAMILY`, once per family: for a kernel without the first.
    PerFamily,
}

/// The request for a dump of every family's TCP sockets in every state,
/// with no extension: `TCPDIAG_GETSOCK` with an `inet_diag_req` (family,
/// address lengths, extensions; the socket id, 48 bytes; the states; the
/// tables, unused). The kernel ignores its family and dumps them all.
fn request_every(seq: u32) -> [u8; 76] {
    let mut req = [0u8; 76];
    req[0..4].copy_from_slice(&76u32.to_ne_bytes());
    req[4..6].copy_from_slice(&TCPDIAG_GETSOCK.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    // Port id 0 (bytes 12..16): the kernel's. Family, lengths, idiag_ext
    // (16..20) and the socket id (20..68) stay 0.
    req[68..72].copy_from_slice(&ALL_STATES.to_ne_bytes());
    req
}

/// Whether the kernel's answer to `TCPDIAG_GETSOCK` says it does not
/// know that request, rather than that netlink is refused.
fn unknown_request(e: &DiagError) -> bool {
    matches!(e, DiagError::Io(e) if e.raw_os_error().is_some_and(|c| {
        [nix::libc::EINVAL, nix::libc::EOPNOTSUPP, nix::libc::ENOENT].contains(&c)
    }))
}

/// The request for a dump of `family`'s TCP sockets in every state, with
/// no extension.
fn request(family: u8, seq: u32) -> [u8; 72] {
    let mut req = [0u8; 72];
    req[0..4].copy_from_slice(&72u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&seq.to_ne_bytes());
    // Port id 0 (bytes 12..16): the kernel's.
    req[16] = family;
    req[17] = IPPROTO_TCP;
    // idiag_ext 0, pad 0; then the states; the socket id (48 bytes) stays 0.
    req[20..24].copy_from_slice(&ALL_STATES.to_ne_bytes());
    req
}

/// Whether a dump has more datagrams to come.
#[derive(Debug, PartialEq)]
pub(super) enum Flow {
    More,
    Done,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_ne_bytes(word)
}

/// Counts the sockets of one datagram (or of several, one after the other)
/// by state into `counts` (index: the kernel's state number). Messages of
/// another sequence number than `seq`, when given, are left out.
pub(super) fn count(
    mut bytes: &[u8],
    seq: Option<u32>,
    counts: &mut [u64; STATES.len() + 1],
) -> Result<Flow, DiagError> {
    while !bytes.is_empty() {
        if bytes.len() < NLMSG_HDR {
            return Err(DiagError::Malformed(format!(
                "{} bytes left, less than a header",
                bytes.len()
            )));
        }
        let len = u32_at(bytes, 0) as usize;
        if len < NLMSG_HDR || len > bytes.len() {
            return Err(DiagError::Malformed(format!(
                "message of {len} bytes with {} left",
                bytes.len()
            )));
        }
        let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
        let payload = &bytes[NLMSG_HDR..len];
        let ours = seq.is_none_or(|seq| u32_at(bytes, 8) == seq);
        // Messages are aligned to 4 bytes.
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
        if !ours {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(Flow::Done),
            NLMSG_ERROR => {
                let errno = payload
                    .get(0..4)
                    .map(|_| u32_at(payload, 0) as i32)
                    .ok_or_else(|| DiagError::Malformed("error message without its code".into()))?;
                if errno != 0 {
                    return Err(DiagError::Io(io::Error::from_raw_os_error(-errno)));
                }
            }
            TCPDIAG_GETSOCK | SOCK_DIAG_BY_FAMILY => {
                // inet_diag_msg: family, state, timer, retrans, ...
                let state = *payload
                    .get(1)
                    .ok_or_else(|| DiagError::Malformed(format!("socket message of {len} bytes")))?
                    as usize;
                match counts.get_mut(state) {
                    Some(n) if state > 0 => *n += 1,
                    _ => return Err(DiagError::Malformed(format!("socket state {state}"))),
                }
            }
            // NLMSG_NOOP, NLMSG_OVERRUN and anything newer.
            _ => {}
        }
    }
    Ok(Flow::More)
}

/// The netlink socket kept between ticks, and how it is opened.
pub(super) struct State {
    source: SockDiagSource,
    open: fn() -> io::Result<OwnedFd>,
    socket: Option<OwnedFd>,
    buf: Vec<u8>,
    seq: u32,
    request: Request,
}

/// A netlink sock_diag socket whose reads give up after `RECV_TIMEOUT`.
fn open_kernel() -> io::Result<OwnedFd> {
    let socket = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    rustix::net::sockopt::set_socket_timeout(
        &socket,
        rustix::net::sockopt::Timeout::Recv,
        Some(RECV_TIMEOUT),
    )?;
    Ok(socket)
}

impl State {
    pub(super) fn new(source: SockDiagSource) -> Self {
        State {
            source,
            open: open_kernel,
            socket: None,
            buf: Vec::new(),
            seq: 0,
            request: Request::Every,
        }
    }

    /// Appends the connections by state, IPv4 and IPv6 together.
    pub(super) fn sample(&mut self, out: &mut Samples) -> Result<(), DiagError> {
        let mut counts = [0u64; STATES.len() + 1];
        let result = match &self.source {
            SockDiagSource::Kernel => self.dump_kernel(&mut counts),
            SockDiagSource::Recorded(dir) => Self::read_recorded(dir, &mut counts),
        };
        if let Err(e) = result {
            self.socket = None;
            return Err(e);
        }
        for (state, n) in STATES.iter().zip(&counts[1..]) {
            out.push_labeled(
                "host_tcp_connections",
                vec![("state", (*state).to_owned())],
                *n as f64,
            );
        }
        Ok(())
    }

    /// Every family's sockets from the kernel: one dump, or one per
    /// family where the kernel does not know the first request.
    fn dump_kernel(&mut self, counts: &mut [u64; STATES.len() + 1]) -> Result<(), DiagError> {
        if self.request == Request::Every {
            self.seq = self.seq.wrapping_add(1);
            let req = request_every(self.seq);
            match self.dump(&req, counts) {
                Err(e) if unknown_request(&e) => {
                    tracing::info!(error = %e, "sock_diag: TCPDIAG_GETSOCK refused, asking per address family");
                    self.request = Request::PerFamily;
                    *counts = [0; STATES.len() + 1];
                    // A fresh socket: nothing of the refused dump left.
                    self.socket = None;
                }
                other => return other,
            }
        }
        for family in [AF_INET, AF_INET6] {
            self.seq = self.seq.wrapping_add(1);
            let req = request(family, self.seq);
            self.dump(&req, counts)?;
        }
        Ok(())
    }

    /// The recorded datagrams of `dir`: `inet4`, then `inet6` if there
    /// is one (a dump of every family is recorded as `inet4` alone).
    fn read_recorded(
        dir: &std::path::Path,
        counts: &mut [u64; STATES.len() + 1],
    ) -> Result<(), DiagError> {
        for file in ["inet4", "inet6"] {
            let bytes = match std::fs::read(dir.join(file)) {
                Ok(bytes) => bytes,
                Err(e) if file == "inet6" && e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e.into()),
            };
            match count(&bytes, None, counts)? {
                Flow::Done => {}
                Flow::More => return Err(DiagError::Malformed("dump without its end".into())),
            }
        }
        Ok(())
    }

    /// One dump from the kernel: `req` sent, its replies (numbered
    /// `self.seq`) counted.
    fn dump(&mut self, req: &[u8], counts: &mut [u64; STATES.len() + 1]) -> Result<(), DiagError> {
        let socket = match &self.socket {
            Some(socket) => socket,
            None => self.socket.insert((self.open)()?),
        };
        rustix::net::sendto(
            socket,
            req,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )
        .map_err(io::Error::from)?;
        self.buf.resize(RECV_BUFFER, 0);
        for _ in 0..MAX_RECVS {
            let (n, _) = rustix::net::recv(socket, &mut self.buf[..], RecvFlags::empty())
                .map_err(io::Error::from)?;
            if n == 0 {
                return Err(DiagError::Malformed("empty datagram".into()));
            }
            if count(&self.buf[..n], Some(self.seq), counts)? == Flow::Done {
                return Ok(());
            }
        }
        Err(DiagError::Malformed(format!(
            "no end after {MAX_RECVS} datagrams"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::tests::fixture;

    fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = (NLMSG_HDR + payload.len()) as u32;
        let mut m = Vec::new();
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0x2u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn socket(state: u8) -> Vec<u8> {
        let mut payload = vec![0u8; 72];
        payload[0] = AF_INET;
        payload[1] = state;
        message(SOCK_DIAG_BY_FAMILY, 7, &payload)
    }

    #[test]
    fn the_request_asks_every_state_and_no_extension() {
        let req = request(AF_INET6, 9);
        assert_eq!(u32_at(&req, 0), 72);
        assert_eq!(u32_at(&req, 8), 9);
        assert_eq!((req[16], req[17], req[18]), (AF_INET6, IPPROTO_TCP, 0));
        assert_eq!(u32_at(&req, 20), 0b1111_1111_1110);
    }

    #[test]
    fn the_request_for_every_family_asks_every_state_and_no_extension() {
        let req = request_every(9);
        assert_eq!(u32_at(&req, 0), 76);
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), TCPDIAG_GETSOCK);
        assert_eq!(u32_at(&req, 8), 9);
        // Family, lengths and extensions 0; the socket id 0; every state.
        assert!(req[16..68].iter().all(|b| *b == 0));
        assert_eq!(u32_at(&req, 68), 0b1111_1111_1110);
        assert_eq!(u32_at(&req, 72), 0);
    }

    #[test]
    fn only_an_unknown_request_falls_back_to_per_family() {
        let errno = |c| DiagError::Io(io::Error::from_raw_os_error(c));
        for c in [nix::libc::EINVAL, nix::libc::EOPNOTSUPP, nix::libc::ENOENT] {
            assert!(unknown_request(&errno(c)), "{c}");
        }
        for c in [nix::libc::EPERM, nix::libc::EACCES, nix::libc::EAGAIN] {
            assert!(!unknown_request(&errno(c)), "{c}");
        }
        assert!(!unknown_request(&DiagError::Malformed("x".into())));
    }

    #[test]
    fn one_dump_has_ipv4_and_ipv6_sockets() {
        // This test's listeners, one of each family, on loopback.
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let Ok(v6) = std::net::TcpListener::bind("[::1]:0") else {
            return; // No IPv6 on this machine: nothing to tell apart.
        };
        let ports = [
            (AF_INET, v4.local_addr().unwrap().port()),
            (AF_INET6, v6.local_addr().unwrap().port()),
        ];
        let Ok(socket) = open_kernel() else {
            return; // No netlink here: `this_kernel_answers_or_refuses`.
        };
        rustix::net::sendto(
            &socket,
            &request_every(1),
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )
        .unwrap();
        // inet_diag_msg: family, state, timer, retrans, then the source
        // port (big-endian).
        let mut listening = Vec::new();
        let mut buf = vec![0u8; RECV_BUFFER];
        'dump: loop {
            let (n, _) = rustix::net::recv(&socket, &mut buf[..], RecvFlags::empty()).unwrap();
            let mut bytes = &buf[..n];
            while bytes.len() >= NLMSG_HDR {
                let len = u32_at(bytes, 0) as usize;
                let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
                match kind {
                    NLMSG_DONE => break 'dump,
                    NLMSG_ERROR => panic!("refused: {}", u32_at(bytes, NLMSG_HDR) as i32),
                    TCPDIAG_GETSOCK => {
                        let m = &bytes[NLMSG_HDR..len];
                        if m[1] == 10 {
                            listening.push((m[0], u16::from_be_bytes([m[4], m[5]])));
                        }
                    }
                    other => panic!("message type {other}"),
                }
                bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
            }
        }
        for port in ports {
            assert!(listening.contains(&port), "{port:?} not in {listening:?}");
        }
    }

    #[test]
    fn counts_states_until_done() {
        let mut bytes = [socket(1), socket(1), socket(10), socket(6)].concat();
        let mut counts = [0; 12];
        assert_eq!(count(&bytes, Some(7), &mut counts).unwrap(), Flow::More);
        assert_eq!((counts[1], counts[10], counts[6]), (2, 1, 1));
        // Another dump's leftovers are not counted.
        bytes = [
            message(SOCK_DIAG_BY_FAMILY, 6, &[0, 1]),
            message(NLMSG_DONE, 7, &[0; 4]),
        ]
        .concat();
        assert_eq!(count(&bytes, Some(7), &mut counts).unwrap(), Flow::Done);
        assert_eq!(counts[1], 2);
    }

    #[test]
    fn a_recorded_dump_of_this_kind_of_host() {
        let mut state = State::new(SockDiagSource::Recorded(fixture("host-a/sock_diag")));
        let mut out = Samples::default();
        state.sample(&mut out).unwrap();
        let get = |s: &str| out.get("host_tcp_connections", &[("state", s)]).unwrap();
        // IPv4 and IPv6 together.
        assert_eq!(get("listen"), 5.0);
        assert_eq!(get("established"), 5.0);
        assert_eq!(get("time_wait"), 2.0);
        assert_eq!(get("close_wait"), 0.0);
        assert_eq!(out.0.len(), 11);
    }

    #[test]
    fn a_recorded_dump_of_every_family_is_inet4_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut dump = [socket(1), socket(10)].concat();
        let mut v6 = socket(1);
        v6[NLMSG_HDR] = AF_INET6;
        dump.extend(v6);
        dump.extend(message(NLMSG_DONE, 7, &[0; 4]));
        std::fs::write(dir.path().join("inet4"), dump).unwrap();
        let mut state = State::new(SockDiagSource::Recorded(dir.path().to_owned()));
        let mut out = Samples::default();
        state.sample(&mut out).unwrap();
        let get = |s: &str| out.get("host_tcp_connections", &[("state", s)]).unwrap();
        assert_eq!((get("established"), get("listen")), (2.0, 1.0));
    }

    #[test]
    fn refused_netlink_is_an_error_not_a_panic() {
        // The socket itself refused, as under a seccomp policy.
        let mut state = State::new(SockDiagSource::Kernel);
        state.open = || Err(io::Error::from_raw_os_error(nix::libc::EPERM));
        let mut out = Samples::default();
        let err = state.sample(&mut out).unwrap_err();
        assert!(err.to_string().contains("not permitted"), "{err}");
        assert!(out.0.is_empty());
        // The request refused by the kernel, in its reply.
        let bytes = message(NLMSG_ERROR, 7, &(-nix::libc::EACCES).to_ne_bytes());
        let err = count(&bytes, Some(7), &mut [0; 12]).unwrap_err();
        assert!(
            matches!(&err, DiagError::Io(e) if e.raw_os_error() == Some(nix::libc::EACCES)),
            "{err}"
        );
    }

    #[test]
    fn malformed_replies_are_errors() {
        let mut counts = [0; 12];
        for bytes in [
            vec![1, 2, 3],
            message(SOCK_DIAG_BY_FAMILY, 7, &[])[..NLMSG_HDR].to_vec(),
            {
                let mut m = socket(1);
                m[0] = 200;
                m
            },
            socket(13),
            socket(0),
            message(NLMSG_ERROR, 7, &[1]),
        ] {
            assert!(count(&bytes, None, &mut counts).is_err(), "{bytes:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("inet4"), socket(1)).unwrap();
        let mut state = State::new(SockDiagSource::Recorded(dir.path().to_owned()));
        assert!(state.sample(&mut Samples::default()).is_err(), "no end");
    }

    #[test]
    fn this_kernel_answers_or_refuses() {
        let _listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut state = State::new(SockDiagSource::Kernel);
        let mut out = Samples::default();
        match state.sample(&mut out) {
            Ok(()) => {
                // A second tick on the kept socket.
                state.sample(&mut out).unwrap();
                assert_eq!(out.0.len(), 22);
                assert_eq!(state.request, Request::Every);
                // The requests per family, as a kernel without the
                // first would be asked, on the same socket.
                state.request = Request::PerFamily;
                let mut per_family = Samples::default();
                state.sample(&mut per_family).unwrap();
                assert_eq!(per_family.0.len(), 11);
                assert!(
                    per_family
                        .get("host_tcp_connections", &[("state", "listen")])
                        .unwrap()
                        > 0.0
                );
            }
            // A sandbox without netlink: refused, never a panic or a hang.
            Err(DiagError::Io(e)) => {
                let refused = [
                    nix::libc::EPERM,
                    nix::libc::EACCES,
                    nix::libc::EAFNOSUPPORT,
                    nix::libc::EPROTONOSUPPORT,
                ];
                assert!(
                    e.raw_os_error().is_some_and(|c| refused.contains(&c)),
                    "{e}"
                );
            }
            Err(e) => panic!("{e}"),
        }
    }
}
