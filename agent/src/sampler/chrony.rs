//! The time source chronyd uses, asked as `chronyc tracking` asks it: one
//! `REQ_TRACKING` datagram to chronyd's command port (UDP, 127.0.0.1:323)
//! per tick, and `REQ_NTP_SOURCE_NAME` when the source's address changes.
//! Both are read-only requests chronyd answers any local client, so the
//! agent needs no privilege (its Unix socket would take root or the
//! chrony user), and a tick costs two system calls more; running
//! `chronyc` every tick would cost a process.
//!
//! The protocol is chrony's `candm.h` (version 6, chrony 2.2 to 4.x); the
//! requests are padded to their replies' length, as chronyd wants them.
//! Only a privileged process can bind port 323, so a reply from it is
//! chronyd's. No chronyd (the port refuses) is not a problem: nothing is
//! reported; a reply that is not chronyd's protocol is.
//!
//! Part of the `time` family (its errors are counted there);
//! `fixtures/chrony/` holds replies recorded from chronyd 4.3.

#![cfg(target_os = "linux")]

use super::Samples;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// chronyd's default command port (`DEFAULT_CANDM_PORT`).
pub const DEFAULT_ADDRESS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 323);

/// How long chronyd has to answer; it answers a local request at once.
const REPLY_TIMEOUT: Duration = Duration::from_millis(100);

const PROTO_VERSION: u8 = 6;
const PKT_TYPE_CMD_REQUEST: u8 = 1;
const PKT_TYPE_CMD_REPLY: u8 = 2;
const REQ_TRACKING: u16 = 33;
const REQ_NTP_SOURCE_NAME: u16 = 65;
const RPY_TRACKING: u16 = 5;
const RPY_NTP_SOURCE_NAME: u16 = 19;
const STT_SUCCESS: u16 = 0;
const STT_NOSUCHSOURCE: u16 = 4;
/// `CMD_Request`'s header, before its data.
const REQUEST_HEADER: usize = 20;
/// `CMD_Reply`'s header, before its data.
const REPLY_HEADER: usize = 28;
/// A tracking reply: the header and `RPY_Tracking`.
const TRACKING_LEN: usize = REPLY_HEADER + 76;
/// A source name reply: the header and `RPY_NTP_Source_Name` (256 bytes).
const SOURCE_NAME_LEN: usize = REPLY_HEADER + 256;
const IPADDR_UNSPEC: u16 = 0;
const IPADDR_INET4: u16 = 1;
const IPADDR_INET6: u16 = 2;
/// `leap_status` when chronyd is not synchronised to any source.
const LEAP_UNSYNCHRONISED: u16 = 3;

/// Where chronyd is asked.
#[derive(Debug, Clone)]
pub enum ChronySource {
    /// chronyd's command port: normally [`DEFAULT_ADDRESS`]; tests run a
    /// chronyd (or recorded replies) on a loopback port of their own.
    Udp(SocketAddr),
    /// Not asked (tests of other families).
    Absent,
}

impl Default for ChronySource {
    fn default() -> Self {
        ChronySource::Udp(DEFAULT_ADDRESS)
    }
}

/// The source chronyd is synchronised to.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Tracking {
    /// The source's address; `None` for a reference clock or chronyd's
    /// local reference, which have only their reference id.
    pub(super) address: Option<IpAddr>,
    pub(super) ref_id: u32,
}

/// The socket and what was last learnt, kept between ticks.
pub(super) struct State {
    source: ChronySource,
    socket: Option<UdpSocket>,
    sequence: u32,
    /// The configured name of the last source asked about.
    name: Option<(IpAddr, String)>,
    /// Request and reply, reused.
    request: Vec<u8>,
    reply: Vec<u8>,
}

impl State {
    pub(super) fn new(source: ChronySource) -> Self {
        // Any start will do: a reply is matched to its request, and only
        // chronyd (privileged port) can answer.
        let sequence = std::process::id().rotate_left(16);
        State {
            source,
            socket: None,
            sequence,
            name: None,
            request: Vec::new(),
            reply: Vec::new(),
        }
    }

    /// Appends `host_time_source_info{daemon="chronyd"}` when chronyd
    /// runs and has a source; the error says what went wrong.
    pub(super) fn sample(&mut self, out: &mut Samples) -> Result<(), String> {
        let ChronySource::Udp(address) = self.source else {
            return Ok(());
        };
        let tracking = match self.tracking(address) {
            Ok(Some(tracking)) => tracking,
            Ok(None) => return Ok(()),
            Err(e) => return Err(format!("chronyd at {address}: {e}")),
        };
        let (server, address_label) = match tracking.address {
            Some(ip) => {
                let name = self
                    .source_name(address, ip)
                    .map_err(|e| format!("chronyd at {address}: {e}"))?;
                (name, ip.to_string())
            }
            None => (ref_id_name(tracking.ref_id), String::new()),
        };
        out.push_labeled(
            "host_time_source_info",
            vec![
                ("daemon", "chronyd".to_owned()),
                ("server", server),
                ("address", address_label),
            ],
            1.0,
        );
        Ok(())
    }

    /// The tracking report; `None` when no chronyd listens or it has no
    /// source.
    fn tracking(&mut self, address: SocketAddr) -> Result<Option<Tracking>, Error> {
        self.request_reply(address, REQ_TRACKING, &[])?;
        match parse_tracking(&self.reply, self.sequence) {
            Err(Error::Refused) => Ok(None),
            other => other,
        }
    }

    /// The name chronyd was configured with for the source at `ip` (the
    /// address itself when it has none), asked once per address.
    fn source_name(&mut self, address: SocketAddr, ip: IpAddr) -> Result<String, Error> {
        if let Some((known, name)) = &self.name
            && *known == ip
        {
            return Ok(name.clone());
        }
        self.request_reply(address, REQ_NTP_SOURCE_NAME, &ip_addr(ip))?;
        let name = parse_source_name(&self.reply, self.sequence)?.unwrap_or_else(|| ip.to_string());
        self.name = Some((ip, name.clone()));
        Ok(name)
    }

    /// Sends request `command` with `data`, and leaves the reply with the
    /// same sequence number in `self.reply` (empty if the port refused).
    fn request_reply(
        &mut self,
        address: SocketAddr,
        command: u16,
        data: &[u8],
    ) -> Result<(), Error> {
        self.sequence = self.sequence.wrapping_add(1);
        let reply_len = if command == REQ_TRACKING {
            TRACKING_LEN
        } else {
            SOURCE_NAME_LEN
        };
        write_request(&mut self.request, command, self.sequence, data, reply_len);
        let socket = match &self.socket {
            Some(socket) => socket,
            None => self.socket.insert(open(address).map_err(Error::Io)?),
        };
        self.reply.clear();
        match socket.send(&self.request) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(()),
            Err(e) => return Err(Error::Io(e)),
        }
        // A late reply to an earlier tick's request is skipped; a few at most.
        let mut buf = [0u8; 512];
        for _ in 0..4 {
            match socket.recv(&mut buf) {
                Ok(n) if n < REPLY_HEADER || buf[16..20] == self.sequence.to_be_bytes() => {
                    self.reply.extend_from_slice(&buf[..n]);
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(Error::Timeout);
                }
                Err(e) => return Err(Error::Io(e)),
            }
        }
        Err(Error::Reply("only replies to other requests".to_owned()))
    }
}

/// Why chronyd gave no answer the agent can use.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// Nothing listens on the port: no chronyd, or its command port is off.
    #[error("no chronyd listens")]
    Refused,
    #[error("no reply within {REPLY_TIMEOUT:?}")]
    Timeout,
    #[error("{0}")]
    Io(io::Error),
    #[error("{0}")]
    Reply(String),
}

/// A socket connected to `address`, so that only its replies arrive and
/// a closed port is reported (`ECONNREFUSED`) rather than waited for.
fn open(address: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = match address {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(address)?;
    socket.set_read_timeout(Some(REPLY_TIMEOUT))?;
    Ok(socket)
}

/// A request: the header, `data`, and zeroes up to the reply's length
/// (chronyd refuses shorter requests, so it never amplifies).
fn write_request(buf: &mut Vec<u8>, command: u16, sequence: u32, data: &[u8], len: usize) {
    buf.clear();
    buf.extend_from_slice(&[PROTO_VERSION, PKT_TYPE_CMD_REQUEST, 0, 0]);
    buf.extend_from_slice(&command.to_be_bytes());
    // attempt
    buf.extend_from_slice(&0u16.to_be_bytes());
    buf.extend_from_slice(&sequence.to_be_bytes());
    // pad1, pad2
    buf.extend_from_slice(&[0; 8]);
    debug_assert_eq!(buf.len(), REQUEST_HEADER);
    buf.extend_from_slice(data);
    buf.resize(len.max(buf.len()), 0);
}

/// `IPAddr` as chronyd sends it: 16 bytes of address, family, padding.
fn ip_addr(ip: IpAddr) -> [u8; 20] {
    let mut out = [0u8; 20];
    let family = match ip {
        IpAddr::V4(v4) => {
            out[..4].copy_from_slice(&v4.octets());
            IPADDR_INET4
        }
        IpAddr::V6(v6) => {
            out[..16].copy_from_slice(&v6.octets());
            IPADDR_INET6
        }
    };
    out[16..18].copy_from_slice(&family.to_be_bytes());
    out
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks a reply's header against the request (`command`, `sequence`)
/// and returns its status and reply code. An empty reply is a refused
/// port.
fn check_header(reply: &[u8], command: u16, sequence: u32) -> Result<(u16, u16), Error> {
    if reply.is_empty() {
        return Err(Error::Refused);
    }
    if reply.len() < REPLY_HEADER {
        return Err(Error::Reply(format!(
            "a reply of {} bytes, shorter than a header",
            reply.len()
        )));
    }
    if reply[1] != PKT_TYPE_CMD_REPLY || reply[2] != 0 || reply[3] != 0 {
        return Err(Error::Reply("not a command reply".to_owned()));
    }
    if reply[0] != PROTO_VERSION {
        return Err(Error::Reply(format!(
            "protocol version {}, not {PROTO_VERSION}",
            reply[0]
        )));
    }
    if u16_at(reply, 4) != command || u32_at(reply, 16) != sequence {
        return Err(Error::Reply(
            "a reply to another request (command or sequence)".to_owned(),
        ));
    }
    Ok((u16_at(reply, 8), u16_at(reply, 6)))
}

/// A `REQ_TRACKING` reply: the source in use, `None` when unsynchronised.
fn parse_tracking(reply: &[u8], sequence: u32) -> Result<Option<Tracking>, Error> {
    let (status, code) = check_header(reply, REQ_TRACKING, sequence)?;
    if status != STT_SUCCESS {
        return Err(Error::Reply(format!(
            "tracking refused with status {status}"
        )));
    }
    if code != RPY_TRACKING || reply.len() < TRACKING_LEN {
        return Err(Error::Reply(format!(
            "tracking answered with reply {code} of {} bytes, not {RPY_TRACKING} of {TRACKING_LEN}",
            reply.len()
        )));
    }
    let data = &reply[REPLY_HEADER..];
    let ref_id = u32_at(data, 0);
    let ip = &data[4..24];
    let family = u16_at(ip, 16);
    let leap = u16_at(data, 26);
    if leap > LEAP_UNSYNCHRONISED {
        return Err(Error::Reply(format!("leap status {leap} is not 0 to 3")));
    }
    let address = match family {
        IPADDR_INET4 => Some(IpAddr::from([ip[0], ip[1], ip[2], ip[3]])),
        IPADDR_INET6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&ip[..16]);
            Some(IpAddr::from(octets))
        }
        IPADDR_UNSPEC => None,
        other => {
            return Err(Error::Reply(format!(
                "the source's address family {other} is not 0, 1 or 2"
            )));
        }
    };
    if leap == LEAP_UNSYNCHRONISED || (address.is_none() && ref_id == 0) {
        return Ok(None);
    }
    Ok(Some(Tracking { address, ref_id }))
}

/// A `REQ_NTP_SOURCE_NAME` reply: the name chronyd's configuration gives
/// the source; `None` if chronyd no longer knows the address.
fn parse_source_name(reply: &[u8], sequence: u32) -> Result<Option<String>, Error> {
    let (status, code) = check_header(reply, REQ_NTP_SOURCE_NAME, sequence)?;
    match status {
        STT_SUCCESS => {}
        STT_NOSUCHSOURCE => return Ok(None),
        other => {
            return Err(Error::Reply(format!(
                "source name refused with status {other}"
            )));
        }
    }
    if code != RPY_NTP_SOURCE_NAME || reply.len() < SOURCE_NAME_LEN {
        return Err(Error::Reply(format!(
            "source name answered with reply {code} of {} bytes, not {RPY_NTP_SOURCE_NAME} of {SOURCE_NAME_LEN}",
            reply.len()
        )));
    }
    let field = &reply[REPLY_HEADER..SOURCE_NAME_LEN];
    // NUL-terminated within the field; a host name or an address.
    let name = field
        .iter()
        .position(|b| *b == 0)
        .map(|end| &field[..end])
        .filter(|name| !name.is_empty() && name.iter().all(u8::is_ascii_graphic))
        .ok_or_else(|| Error::Reply("the source's name is not printable text".to_owned()))?;
    // Printable ASCII: valid UTF-8.
    Ok(Some(String::from_utf8_lossy(name).into_owned()))
}

/// A reference clock's id as chronyc shows it (`PPS`, `GPS`), or in hex
/// when it is not text (chronyd's local reference, 7F7F0101).
fn ref_id_name(ref_id: u32) -> String {
    let bytes = ref_id.to_be_bytes();
    let text: Vec<u8> = bytes.iter().copied().take_while(|b| *b != 0).collect();
    if !text.is_empty() && text.iter().all(u8::is_ascii_graphic) {
        String::from_utf8_lossy(&text).into_owned()
    } else {
        format!("{ref_id:08X}")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sampler::tests::fixture;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The sequence numbers the recorded requests carried.
    const RECORDED_TRACKING: u32 = 0x1234;
    const RECORDED_NAME: u32 = 0x1235;

    fn recorded(name: &str) -> Vec<u8> {
        std::fs::read(fixture("chrony").join(name)).unwrap()
    }

    /// A stand-in for chronyd on a loopback port: answers each request
    /// with `answer(command)` (a recorded reply, its sequence number set
    /// to the request's), after checking the request as chronyd does.
    pub(crate) struct FakeChronyd {
        pub(crate) address: SocketAddr,
        pub(crate) name_requests: Arc<AtomicUsize>,
        stop: Arc<std::sync::atomic::AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl FakeChronyd {
        pub(crate) fn start(answer: impl Fn(u16) -> Vec<u8> + Send + 'static) -> FakeChronyd {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let address = socket.local_addr().unwrap();
            let name_requests = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (names, stopped) = (name_requests.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while !stopped.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    let request = &buf[..n];
                    let command = u16_at(request, 4);
                    assert_eq!(request[..2], [PROTO_VERSION, PKT_TYPE_CMD_REQUEST]);
                    // Padded to the reply's length, or chronyd refuses it.
                    let want = match command {
                        REQ_TRACKING => TRACKING_LEN,
                        REQ_NTP_SOURCE_NAME => {
                            names.fetch_add(1, Ordering::Relaxed);
                            SOURCE_NAME_LEN
                        }
                        other => panic!("unexpected request {other}"),
                    };
                    assert_eq!(n, want, "request {command} length");
                    let mut reply = answer(command);
                    if reply.len() >= 20 {
                        reply[16..20].copy_from_slice(&request[8..12]);
                    }
                    socket.send_to(&reply, peer).unwrap();
                }
            });
            FakeChronyd {
                address,
                name_requests,
                stop,
                thread: Some(thread),
            }
        }

        /// Answers with the replies recorded from chronyd 4.3 synchronised
        /// to `localhost` (127.0.0.1).
        pub(crate) fn synchronised() -> FakeChronyd {
            let (tracking, name) = (recorded("tracking"), recorded("source-name"));
            FakeChronyd::start(move |command| match command {
                REQ_TRACKING => tracking.clone(),
                _ => name.clone(),
            })
        }
    }

    impl Drop for FakeChronyd {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = self.thread.take() {
                thread.join().unwrap();
            }
        }
    }

    /// A loopback port nothing listens on.
    fn closed_port() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    }

    #[test]
    fn recorded_replies_parse() {
        let tracking = parse_tracking(&recorded("tracking"), RECORDED_TRACKING)
            .unwrap()
            .unwrap();
        assert_eq!(tracking.address, Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(tracking.ref_id, 0x7F00_0001);
        assert_eq!(
            parse_tracking(&recorded("tracking-unsynchronised"), RECORDED_TRACKING).unwrap(),
            None
        );
        assert_eq!(
            parse_source_name(&recorded("source-name"), RECORDED_NAME).unwrap(),
            Some("localhost".to_owned())
        );
        assert_eq!(
            parse_source_name(&recorded("no-such-source"), RECORDED_NAME).unwrap(),
            None
        );
    }

    #[test]
    fn requests_are_as_chronyc_sends_them() {
        let mut buf = Vec::new();
        write_request(&mut buf, REQ_TRACKING, RECORDED_TRACKING, &[], TRACKING_LEN);
        assert_eq!(buf.len(), 104);
        assert_eq!(
            buf[..20],
            [
                6, 1, 0, 0, 0, 33, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0, 0
            ]
        );
        assert!(buf[20..].iter().all(|b| *b == 0));
        let data = ip_addr(IpAddr::from([192, 0, 2, 7]));
        write_request(&mut buf, REQ_NTP_SOURCE_NAME, 1, &data, SOURCE_NAME_LEN);
        assert_eq!(buf.len(), 284);
        assert_eq!(buf[20..24], [192, 0, 2, 7]);
        // family IPADDR_INET4
        assert_eq!(buf[36..38], [0, 1]);
        let v6 = ip_addr("2001:db8::1".parse().unwrap());
        assert_eq!(v6[15], 1);
        assert_eq!(v6[16..18], [0, 2]);
    }

    #[test]
    fn the_source_in_use_is_reported_and_its_name_asked_once() {
        let chronyd = FakeChronyd::synchronised();
        let mut state = State::new(ChronySource::Udp(chronyd.address));
        for _ in 0..3 {
            let mut out = Samples::default();
            state.sample(&mut out).unwrap();
            assert_eq!(
                out.get(
                    "host_time_source_info",
                    &[
                        ("daemon", "chronyd"),
                        ("server", "localhost"),
                        ("address", "127.0.0.1")
                    ]
                ),
                Some(1.0)
            );
            assert_eq!(out.0.len(), 1);
        }
        assert_eq!(chronyd.name_requests.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_source_chronyd_forgot_is_named_by_its_address() {
        let (tracking, name) = (recorded("tracking"), recorded("no-such-source"));
        let chronyd = FakeChronyd::start(move |command| match command {
            REQ_TRACKING => tracking.clone(),
            _ => name.clone(),
        });
        let mut state = State::new(ChronySource::Udp(chronyd.address));
        let mut out = Samples::default();
        state.sample(&mut out).unwrap();
        let labels = [
            ("daemon", "chronyd"),
            ("server", "127.0.0.1"),
            ("address", "127.0.0.1"),
        ];
        assert_eq!(out.get("host_time_source_info", &labels), Some(1.0));
    }

    #[test]
    fn unsynchronised_or_absent_chronyd_reports_nothing_and_no_error() {
        let unsync = recorded("tracking-unsynchronised");
        let chronyd = FakeChronyd::start(move |_| unsync.clone());
        let mut out = Samples::default();
        State::new(ChronySource::Udp(chronyd.address))
            .sample(&mut out)
            .unwrap();
        assert!(out.0.is_empty());
        assert_eq!(chronyd.name_requests.load(Ordering::Relaxed), 0);

        let mut state = State::new(ChronySource::Udp(closed_port()));
        for _ in 0..2 {
            state.sample(&mut out).unwrap();
        }
        assert!(out.0.is_empty());
    }

    #[test]
    fn reference_clocks_are_named_by_their_id() {
        assert_eq!(ref_id_name(u32::from_be_bytes(*b"PPS\0")), "PPS");
        assert_eq!(ref_id_name(u32::from_be_bytes(*b"GPS1")), "GPS1");
        // chronyd's local reference: not text.
        assert_eq!(ref_id_name(0x7F7F_0101), "7F7F0101");
        let mut reply = recorded("tracking");
        // ref_id "PPS", address family IPADDR_UNSPEC.
        reply[28..32].copy_from_slice(b"PPS\0");
        reply[32..52].fill(0);
        let tracking = parse_tracking(&reply, RECORDED_TRACKING).unwrap().unwrap();
        assert_eq!(tracking.address, None);
        assert_eq!(ref_id_name(tracking.ref_id), "PPS");
    }

    #[test]
    fn replies_that_are_not_chronyds_are_errors() {
        let good = recorded("tracking");
        let with = |at: usize, bytes: &[u8]| {
            let mut reply = good.clone();
            reply[at..at + bytes.len()].copy_from_slice(bytes);
            reply
        };
        for (reply, what) in [
            (b"garbage".to_vec(), "shorter than a header"),
            (good[..60].to_vec(), "of 60 bytes"),
            (with(0, &[5]), "protocol version 5"),
            (with(1, &[1]), "not a command reply"),
            (with(4, &[0, 14]), "another request"),
            (with(16, &[9, 9, 9, 9]), "another request"),
            (with(8, &[0, 2]), "status 2"),
            (with(6, &[0, 1]), "reply 1"),
            (with(48, &[0, 7]), "family 7"),
            (with(54, &[0, 9]), "leap status 9"),
        ] {
            let err = parse_tracking(&reply, RECORDED_TRACKING).unwrap_err();
            assert!(err.to_string().contains(what), "{what}: {err}");
        }
        let name = recorded("source-name");
        let mut unprintable = name.clone();
        unprintable[30] = b'\n';
        let mut unterminated = name.clone();
        unterminated[REPLY_HEADER..].fill(b'a');
        for reply in [unprintable, unterminated] {
            let err = parse_source_name(&reply, RECORDED_NAME).unwrap_err();
            assert!(err.to_string().contains("not printable"), "{err}");
        }
        let mut refused = recorded("no-such-source");
        refused[8..10].copy_from_slice(&[0, 2]);
        let err = parse_source_name(&refused, RECORDED_NAME).unwrap_err();
        assert!(err.to_string().contains("status 2"), "{err}");
    }

    #[test]
    fn a_garbage_reply_over_the_socket_is_an_error_naming_chronyd() {
        let chronyd = FakeChronyd::start(|_| b"garbage, not chronyd".to_vec());
        let mut state = State::new(ChronySource::Udp(chronyd.address));
        let mut out = Samples::default();
        let err = state.sample(&mut out).unwrap_err();
        assert!(
            err.starts_with(&format!("chronyd at {}:", chronyd.address)),
            "{err}"
        );
        assert!(out.0.is_empty());
    }

    /// A free loopback UDP port (free when asked).
    fn free_port() -> u16 {
        closed_port().port()
    }

    /// A `chronyd` (Debian's package `chrony`, which .ci/run installs)
    /// started with `config`, not touching the clock, killed when dropped.
    struct Chronyd(std::process::Child);

    impl Chronyd {
        fn start(dir: &std::path::Path, name: &str, config: &str) -> Chronyd {
            let conf = dir.join(format!("{name}.conf"));
            // No Unix command socket (`bindcmdaddress /`), no files beyond
            // the pid file in `dir`; exits by itself after a minute.
            let config = format!(
                "{config}bindcmdaddress /\npidfile {}\n",
                dir.join(format!("{name}.pid")).display()
            );
            std::fs::write(&conf, config).unwrap();
            let mut command = std::process::Command::new("/usr/sbin/chronyd");
            command
                .args(["-x", "-d", "-4", "-t", "60", "-f"])
                .arg(&conf);
            let uid = nix::unistd::Uid::effective();
            if uid.is_root() {
                command.args(["-u", "root"]);
            } else {
                let user = nix::unistd::User::from_uid(uid).unwrap().unwrap();
                command.args(["-U", "-u", &user.name]);
            }
            let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
            let child = command
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .expect("/usr/sbin/chronyd (Debian package chrony)");
            Chronyd(child)
        }
    }

    impl Drop for Chronyd {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_real_chronyd_names_the_server_it_follows() {
        let dir = tempfile::tempdir().unwrap();
        let (ntp_port, cmd_port) = (free_port(), free_port());
        let command_port = SocketAddr::from(([127, 0, 0, 1], cmd_port));
        let mut state = State::new(ChronySource::Udp(command_port));
        // Not started yet: nothing, and no error.
        let mut out = Samples::default();
        state.sample(&mut out).unwrap();
        assert!(out.0.is_empty());

        // A server chronyd on its local clock, and a client following it
        // (polling 64 times a second, so that it selects it at once).
        let _server = Chronyd::start(
            dir.path(),
            "server",
            &format!(
                "port {ntp_port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\n\
                 cmdport 0\nlocal stratum 8\n"
            ),
        );
        let _client = Chronyd::start(
            dir.path(),
            "client",
            &format!(
                "server 127.0.0.1 port {ntp_port} minpoll -6 maxpoll -6 iburst\n\
                 port 0\ncmdport {cmd_port}\nbindcmdaddress 127.0.0.1\n"
            ),
        );
        let labels = [
            ("daemon", "chronyd"),
            ("server", "127.0.0.1"),
            ("address", "127.0.0.1"),
        ];
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut out = Samples::default();
            // Starting, then unsynchronised: nothing, and no error.
            state.sample(&mut out).unwrap();
            if out.get("host_time_source_info", &labels) == Some(1.0) {
                assert_eq!(out.0.len(), 1);
                break;
            }
            assert!(out.0.is_empty(), "{out:?}");
            if std::time::Instant::now() > deadline {
                let log = |name| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
                panic!(
                    "chronyd selected no source in 30 s\n{}\n{}",
                    log("server.log"),
                    log("client.log")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[test]
    fn a_garbage_reply_is_counted_in_the_time_family() {
        let chronyd = FakeChronyd::start(|_| vec![0xff; 40]);
        let mut sources =
            crate::sampler::tests::fixture_sources("host-a", fixture("host-a").join("proc"));
        sources.chrony = ChronySource::Udp(chronyd.address);
        let settings = crate::sampler::tests::fixture_settings("host-a", None);
        let mut sampler = crate::sampler::Sampler::with_sources(settings, sources);
        let tick = sampler.sample(std::time::Instant::now());
        let errors = |family| {
            tick.samples
                .get("hostwatch_agent_sample_errors_total", &[("family", family)])
        };
        assert_eq!(errors("time"), Some(1.0));
        assert_eq!(errors("cpu"), Some(0.0));
        // The kernel's figures (recorded) are still there.
        assert_eq!(tick.samples.get("host_time_synchronized", &[]), Some(1.0));
        assert!(
            !tick
                .samples
                .0
                .iter()
                .any(|s| s.metric == "host_time_source_info")
        );
    }

    #[test]
    fn a_silent_port_times_out() {
        // Bound, never answering.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut state = State::new(ChronySource::Udp(silent.local_addr().unwrap()));
        let err = state.sample(&mut Samples::default()).unwrap_err();
        assert!(err.contains("no reply within"), "{err}");
    }
}
