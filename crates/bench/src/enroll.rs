//! `hostwatch-bench enroll`: `--agents` simulated agents enrolling at once
//! against one collector process, then renewing, over `--rounds` rounds.
//!
//! Each round starts a fresh collector (`--collector-bin`) with an issuing
//! CA and an enrollment listener, and has an operator create one
//! enrollment token with `--agents` uses (Admin.CreateToken, as `hostwatch
//! token create --enroll` does). Every agent is a task in this process with
//! its own key and certificate signing request (made before the clock
//! starts: a real agent makes them on its own host), sending them as
//! `hostwatch-agent enroll` does (the CA pin checked by
//! `transport::connect_pinned`, then Enroll). All start together; one
//! refused for want of a place on the enrollment listener
//! (`enroll.max_connections`) tries again after a short backoff, as an
//! install script would, until `--deadline-s`. Then each enrolled agent
//! renews (Ingest.Renew) over mTLS with its new certificate and a fresh
//! key, all at once likewise. Every issued certificate is checked against
//! its key and host after the clock stops.
//!
//! Figures: the time from the start until the last agent is enrolled (or
//! renewed), and the collector process' CPU over that time divided by the
//! certificates issued; medians over the rounds, failures and retries
//! summed.

use crate::console::{Collector, free_port};
use crate::fixture::issue;
use crate::measure::{Probe, median};
use anyhow::{Context, ensure};
use hostwatch_pki::transport::{ClientTarget, Keepalive, connect, connect_pinned};
use hostwatch_pki::{Ca, CaPin, CertPair, Role, TlsFiles};
use hostwatch_proto::v1 as pb;
use rcgen::KeyPair;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Simulated agents.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    agents: u32,
    /// Rounds, each with a fresh collector.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    /// Longest time a phase (all enrollments, all renewals) may take.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    deadline_s: u64,
    /// The collector's `enroll.max_connections`.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    enroll_max_connections: u64,
    /// The collector program; by default the one next to this program.
    #[arg(long)]
    collector_bin: Option<PathBuf>,
}

/// Longest wait for a connection, and then for an answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// First and longest delay before an agent tries again.
const RETRY_BASE: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Longest wait for the enrollment listener to accept connections.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);

/// One round's figures.
#[derive(Debug, Default)]
struct Round {
    enroll_seconds: f64,
    enroll_cpu_ms: f64,
    enrolled: u32,
    enroll_retries: u64,
    renew_seconds: f64,
    renew_cpu_ms: f64,
    renewed: u32,
    renew_retries: u64,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let bin = match &args.collector_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("hostwatch-collector"),
    };
    ensure!(
        bin.is_file(),
        "no collector program at {} (build it with `cargo build --release -p hostwatch-collector` or give --collector-bin)",
        bin.display()
    );
    let temp = tempfile::tempdir()?;
    let dir = temp.path();
    let ca = Ca::generate("bench CA", 2)?;
    ca.write(dir)?;
    ca.generate_issuing(2)?.write_issuing(dir)?;
    let server = issue(&ca, dir, Role::Collector, "bench")?;
    let operator = issue(&ca, dir, Role::Operator, "ops")?;
    let pin = CaPin::of_file(&dir.join("ca.pem"))?;
    let site = Site {
        bin,
        dir: dir.to_owned(),
        server,
        operator,
        pin,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let mut rounds = Vec::new();
    for round in 0..args.rounds {
        let figures = runtime.block_on(one_round(&args, &site, round))?;
        println!("# round {round}: {figures:?}");
        rounds.push(figures);
    }
    report(&args, &rounds);
    Ok(())
}

fn report(args: &Args, rounds: &[Round]) {
    let med = |f: fn(&Round) -> f64| {
        median(&rounds.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    };
    let agents = u64::from(args.agents) * rounds.len() as u64;
    let enrolled: u64 = rounds.iter().map(|r| u64::from(r.enrolled)).sum();
    let renewed: u64 = rounds.iter().map(|r| u64::from(r.renewed)).sum();
    println!("agents={}", args.agents);
    println!("rounds={}", rounds.len());
    println!("enroll_max_connections={}", args.enroll_max_connections);
    println!(
        "enroll_all_seconds={:.2} target<=30",
        med(|r| r.enroll_seconds)
    );
    println!(
        "enroll_collector_cpu_ms_per_enrollment={:.2}",
        med(|r| per(r.enroll_cpu_ms, r.enrolled))
    );
    println!("enroll_failures={}", agents - enrolled);
    println!(
        "enroll_retries={}",
        rounds.iter().map(|r| r.enroll_retries).sum::<u64>()
    );
    println!("renew_all_seconds={:.2}", med(|r| r.renew_seconds));
    println!(
        "renew_collector_cpu_ms_per_renewal={:.2}",
        med(|r| per(r.renew_cpu_ms, r.renewed))
    );
    println!("renew_failures={}", enrolled - renewed);
    println!(
        "renew_retries={}",
        rounds.iter().map(|r| r.renew_retries).sum::<u64>()
    );
}

/// `total` shared over `count`, NaN when there is nothing to share it over.
fn per(total: f64, count: u32) -> f64 {
    if count == 0 {
        f64::NAN
    } else {
        total / f64::from(count)
    }
}

/// The delay before retry `attempt` (0 for the first): doubling from
/// [`RETRY_BASE`] up to [`RETRY_MAX`].
fn retry_delay(attempt: u32) -> Duration {
    RETRY_BASE
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(RETRY_MAX)
}

/// Whether a refusal may pass by itself: no place on the listener, or
/// the connection cut (a full listener closes new connections, which the
/// client sees as its call cancelled), not a refused request.
fn transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::ResourceExhausted
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
    )
}

/// What every round uses: the collector program, the work directory with
/// the CAs, the collector's and an operator's certificates, the CA pin.
struct Site {
    bin: PathBuf,
    dir: PathBuf,
    server: TlsFiles,
    operator: TlsFiles,
    pin: CaPin,
}

/// A fresh collector, the round measured against it, the collector stopped.
async fn one_round(args: &Args, site: &Site, round: u32) -> anyhow::Result<Round> {
    let dir = &site.dir;
    let enroll_port = free_port()?;
    let grpc = free_port()?;
    let keys = format!("enroll_listen = \"127.0.0.1:{enroll_port}\"\n");
    // The round renews every agent right after enrolling it, which
    // `min_renew_interval` exists to refuse in production.
    let tables = format!(
        "\n[enroll]\nissuer_cert = {:?}\nissuer_key = {:?}\nmax_connections = {}\n\
         min_renew_interval = \"1ms\"\n",
        dir.join("issuing.pem").display().to_string(),
        dir.join("issuing.key").display().to_string(),
        args.enroll_max_connections
    );
    let name = format!("round-{round}");
    let collector = tokio::task::block_in_place(|| {
        let extra = (keys.as_str(), tables.as_str());
        Collector::start_with(&site.bin, dir, &name, &site.server, grpc, None, extra)
    })?;
    let ports = (enroll_port, grpc);
    let result = measure_round(args, site, &name, collector.pid(), ports).await;
    tokio::task::block_in_place(|| collector.stop())?;
    result
}

/// The round's enrollments and renewals against the collector `pid`
/// serving Enroll on `ports.0` and its main listener on `ports.1`.
async fn measure_round(
    args: &Args,
    site: &Site,
    name: &str,
    pid: u32,
    ports: (u16, u16),
) -> anyhow::Result<Round> {
    let (enroll_port, grpc) = ports;
    let (dir, pin) = (&site.dir, site.pin);
    let enroll_addr = format!("127.0.0.1:{enroll_port}");
    wait_listening(&enroll_addr).await?;
    let token = create_token(grpc, &site.operator, args.agents).await?;
    let probe = Probe::new(pid);
    let deadline = Duration::from_secs(args.deadline_s);
    let mut round = Round::default();

    // Enrollment: keys and requests first, then all agents at once.
    let hosts: Vec<String> = (0..args.agents).map(|i| format!("bench-{i}")).collect();
    let requests = make_requests(&hosts)?;
    let cpu = probe.cpu_ns()?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (host, (_, csr)) in hosts.iter().zip(&requests) {
        let request = pb::EnrollRequest {
            token: token.clone(),
            host_id: host.clone(),
            csr: csr.clone(),
            replace: false,
        };
        let addr = enroll_addr.clone();
        let i = tasks.len();
        tasks.spawn(async move { (i, enroll_one(addr, pin, request, start + deadline).await) });
    }
    let answers = collect(&mut tasks, &mut round.enroll_retries).await?;
    round.enroll_seconds = start.elapsed().as_secs_f64();
    round.enroll_cpu_ms = (probe.cpu_ns()? - cpu) as f64 / 1e6;

    // The enrolled agents' files, checked.
    let agents_dir = dir.join(format!("{name}-agents"));
    std::fs::create_dir_all(&agents_dir)?;
    let mut enrolled = Vec::new();
    for (answer, (host, (key, _))) in answers.into_iter().zip(hosts.iter().zip(&requests)) {
        let Some(answer) = answer else { continue };
        let answer: pb::EnrollResponse = answer;
        if let Err(e) =
            hostwatch_pki::enroll::check_issued(&answer.certificate_chain_pem, key, host)
        {
            eprintln!("{host}: issued certificate unusable: {e}");
            continue;
        }
        let (cert, key) = CertPair {
            cert_pem: answer.certificate_chain_pem,
            key_pem: key.serialize_pem(),
        }
        .write(&agents_dir, host)?;
        let tls = TlsFiles {
            ca: dir.join("ca.pem"),
            cert,
            key,
        };
        enrolled.push((host.clone(), tls));
    }
    round.enrolled = enrolled.len() as u32;

    // Renewal: fresh keys and requests first, then all at once.
    let renewing: Vec<String> = enrolled.iter().map(|(h, _)| h.clone()).collect();
    let requests = make_requests(&renewing)?;
    let cpu = probe.cpu_ns()?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for ((_, tls), (_, csr)) in enrolled.iter().zip(&requests) {
        let target = ClientTarget {
            address: format!("127.0.0.1:{grpc}"),
            server_name: Some("localhost".to_owned()),
            tls: tls.clone(),
            connect_timeout: CALL_TIMEOUT,
            keepalive: Keepalive::default(),
        };
        let csr = csr.clone();
        let i = tasks.len();
        tasks.spawn(async move { (i, renew_one(target, csr, start + deadline).await) });
    }
    let answers = collect(&mut tasks, &mut round.renew_retries).await?;
    round.renew_seconds = start.elapsed().as_secs_f64();
    round.renew_cpu_ms = (probe.cpu_ns()? - cpu) as f64 / 1e6;
    for (answer, (host, (key, _))) in answers.into_iter().zip(renewing.iter().zip(&requests)) {
        let Some(answer) = answer else { continue };
        let answer: pb::RenewResponse = answer;
        match hostwatch_pki::enroll::check_issued(&answer.certificate_chain_pem, key, host) {
            Ok(()) => round.renewed += 1,
            Err(e) => eprintln!("{host}: renewed certificate unusable: {e}"),
        }
    }
    Ok(round)
}

/// A key and certificate signing request for each of `hosts`.
fn make_requests(hosts: &[String]) -> anyhow::Result<Vec<(KeyPair, Vec<u8>)>> {
    hosts
        .iter()
        .map(|host| hostwatch_pki::enroll::agent_request(host).map_err(Into::into))
        .collect()
}

/// Until `addr` accepts TCP connections.
async fn wait_listening(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        ensure!(
            Instant::now() < deadline,
            "the enrollment listener {addr} not accepting within {LISTEN_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// An enrollment token with `uses` uses for any host, valid for an hour,
/// created by an operator as `hostwatch token create --enroll` does.
async fn create_token(grpc: u16, operator: &TlsFiles, uses: u32) -> anyhow::Result<String> {
    let target = ClientTarget {
        address: format!("127.0.0.1:{grpc}"),
        server_name: Some("localhost".to_owned()),
        tls: operator.clone(),
        connect_timeout: CALL_TIMEOUT,
        keepalive: Keepalive::default(),
    };
    let (channel, _) = connect(&target).await.context("connecting as operator")?;
    let created = pb::admin_client::AdminClient::new(channel)
        .create_token(pb::CreateTokenRequest {
            role: pb::Role::Agent as i32,
            uses,
            ttl_ms: 3_600_000,
            hosts: String::new(),
            ..Default::default()
        })
        .await
        .context("creating the enrollment token")?;
    Ok(created.into_inner().token)
}

/// What an agent's calls came to: the answer (none if it failed for good)
/// and the attempts it retried.
type Outcome<T> = (Option<T>, u64);

/// One agent's enrollment, retried while the refusal is transient and
/// `deadline` has not passed.
async fn enroll_one(
    addr: String,
    pin: CaPin,
    request: pb::EnrollRequest,
    deadline: Instant,
) -> Outcome<pb::EnrollResponse> {
    let mut attempt = 0;
    loop {
        let call = async {
            let channel = connect_pinned(&addr, Some("localhost"), pin, CALL_TIMEOUT)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            pb::enroll_client::EnrollClient::new(channel)
                .enroll(request.clone())
                .await
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(answer)) => return (Some(answer.into_inner()), u64::from(attempt)),
            Ok(Err(status)) if !transient(status.code()) => {
                eprintln!("{}: enrollment refused: {status}", request.host_id);
                return (None, u64::from(attempt));
            }
            _ => {}
        }
        let delay = retry_delay(attempt);
        if Instant::now() + delay > deadline {
            eprintln!("{}: not enrolled before the deadline", request.host_id);
            return (None, u64::from(attempt));
        }
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// One agent's renewal over mTLS with its certificate, retried as
/// [`enroll_one`] is.
async fn renew_one(
    target: ClientTarget,
    csr: Vec<u8>,
    deadline: Instant,
) -> Outcome<pb::RenewResponse> {
    let mut attempt = 0;
    loop {
        let call = async {
            let (channel, _) = connect(&target)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            pb::ingest_client::IngestClient::new(channel)
                .renew(pb::RenewRequest { csr: csr.clone() })
                .await
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(answer)) => return (Some(answer.into_inner()), u64::from(attempt)),
            Ok(Err(status)) if !transient(status.code()) => {
                eprintln!("{}: renewal refused: {status}", target.tls.cert.display());
                return (None, u64::from(attempt));
            }
            _ => {}
        }
        let delay = retry_delay(attempt);
        if Instant::now() + delay > deadline {
            eprintln!(
                "{}: not renewed before the deadline",
                target.tls.cert.display()
            );
            return (None, u64::from(attempt));
        }
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// The agents' answers in the order they were spawned (each task returns
/// its index), their retries added to `retries`.
async fn collect<T: 'static>(
    tasks: &mut tokio::task::JoinSet<(usize, Outcome<T>)>,
    retries: &mut u64,
) -> anyhow::Result<Vec<Option<T>>> {
    let mut answers: Vec<Option<T>> = Vec::new();
    answers.resize_with(tasks.len(), || None);
    while let Some(joined) = tasks.join_next().await {
        let (i, (answer, retried)) = joined.context("an agent task failed")?;
        answers[i] = answer;
        *retries += retried;
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_doubling_up_to_the_longest_delay() {
        assert_eq!(retry_delay(0), RETRY_BASE);
        assert_eq!(retry_delay(1), RETRY_BASE * 2);
        assert_eq!(retry_delay(3), RETRY_BASE * 8);
        assert_eq!(retry_delay(10), RETRY_MAX);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }

    #[test]
    fn only_a_full_listener_or_a_cut_connection_is_retried() {
        assert!(transient(tonic::Code::Unavailable));
        assert!(transient(tonic::Code::ResourceExhausted));
        assert!(transient(tonic::Code::Cancelled));
        for code in [
            tonic::Code::Unauthenticated,
            tonic::Code::PermissionDenied,
            tonic::Code::InvalidArgument,
            tonic::Code::AlreadyExists,
        ] {
            assert!(!transient(code), "{code:?}");
        }
    }

    #[test]
    fn nothing_to_share_over_is_no_figure() {
        assert!(per(10.0, 0).is_nan());
        assert_eq!(per(10.0, 4), 2.5);
    }
}
