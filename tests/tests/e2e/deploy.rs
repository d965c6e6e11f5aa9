//! Issue 17's "done when": the README's "Deploying" section run end to
//! end with real processes. `hostwatch certs init`, the collector's and
//! an operator's certificates (docs/operations.md, "Deploying"), the
//! root's key taken offline, the collector started from a collector.toml
//! with `enroll_listen` and `[enroll]`, `hostwatch token create --enroll`;
//! then two hosts each run `hostwatch-agent enroll` with the printed token
//! (from `HOSTWATCH_ENROLL_TOKEN`, as `deploy/install.sh` passes it) and
//! pin, and the agent program runs from the agent.toml that enroll wrote.
//! Both stream, both renew their short-lived certificates without a gap
//! in their batches, then `hostwatch hosts revoke` cuts one off: its
//! stream closed, its reconnections and its enrollment with the old token
//! refused, while the other keeps streaming.
//!
//! What a test cannot run as the README does, and what runs instead:
//! - `deploy/debian/build.sh`, `dpkg -i` and `deploy/install.sh` need root
//!   and a machine without hostwatch installed: `tests/packages/run.sh`
//!   builds and installs the packages and enrolls through them against a
//!   collector; here the programs run directly, built by this crate
//!   (`e2e-hostwatch`, `e2e-collector`, `e2e-agent`: the same code as the
//!   real binaries).
//! - `systemctl start`: each daemon runs as the unit's `ExecStart=` runs it
//!   (`--config FILE`), without the unit's sandbox, from files in a
//!   temporary directory rather than `/etc/hostwatch` (enroll's `--dir`
//!   and `--state-dir`, relative, as typed in that directory). Run as
//!   root, web-1 is enrolled as the packages do it (`--user`, the config
//!   directory root's and only readable by the user's group, as
//!   `/etc/hostwatch`) and its agent runs as that user, `nobody` here (the
//!   packages' `hostwatch` may not exist), so its renewals are saved in
//!   the state directory's `pki`, as under the unit, which lets the agent
//!   write its state directory only (tests/packages/run.sh does the same
//!   with the installed package). Otherwise both run as the user running
//!   the test, and that part says NOT RUN.
//! - Two hosts on one machine: `--host-id web-1` and `web-2` instead of
//!   the host name.
//! - Addresses: loopback ports chosen at test time; the collector's
//!   certificate names `localhost` and 127.0.0.1.
//! - Test time instead of production time: `enroll.cert_lifetime` of
//!   20 s (30 days by default), so that certificates renew within the
//!   test; the agents sample and look at their certificate files every
//!   200 ms and reconnect within 500 ms (keys added to the agent.toml
//!   enroll wrote).

use hostwatch_pki::TlsFiles;
use hostwatch_proto::v1::ingest_client::IngestClient;
use hostwatch_proto::v1::{RenewRequest, SeriesPoints};
use hostwatch_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// Longest wait for one step; generous, the machine may be busy.
const WAIT: Duration = Duration::from_secs(60);
/// Longest wait for the renewals: two per host, each two thirds of
/// `LIFETIME` after the last.
const RENEW_WAIT: Duration = Duration::from_secs(150);
/// The collector's `enroll.cert_lifetime`.
const LIFETIME: &str = "20s";
const HOSTWATCH: &str = env!("CARGO_BIN_EXE_e2e-hostwatch");
const AGENT: &str = env!("CARGO_BIN_EXE_e2e-agent");
const COLLECTOR: &str = env!("CARGO_BIN_EXE_e2e-collector");

/// Runs `program` to its end, with `env` in its environment.
fn run(program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    run_in(Path::new("."), program, args, env)
}

/// Runs `program` to its end in the directory `cwd`.
fn run_in(cwd: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(program)
        .current_dir(cwd)
        .args(args)
        .env_remove("HOSTWATCH_CONFIG")
        .env_remove("HOSTWATCH_ENROLL_TOKEN")
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {:?}: {}",
        out.status,
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The collector's side of the deployment, running.
struct Site {
    dir: tempfile::TempDir,
    pin: String,
    grpc: SocketAddr,
    enroll: String,
    operator: TlsFiles,
    collector: Process,
}

impl Site {
    /// `certs init`, `certs issue` for the collector and an operator, the
    /// root's key offline, collector.toml and cli.toml, the collector.
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let pin = ok(
            "certs init",
            run(HOSTWATCH, &["certs", "init", "--dir", &p(&pki)], &[]),
        )
        .trim()
        .to_owned();
        let issue = ["certs", "issue", "--dir", &p(&pki), "--role"];
        let collector = ["collector", "--name", "main", "--dns", "localhost"];
        let collector = [&issue[..], &collector, &["--ip", "127.0.0.1"]].concat();
        ok("certs issue collector", run(HOSTWATCH, &collector, &[]));
        let operator = [&issue[..], &["operator", "--name", "alice"]].concat();
        ok("certs issue operator", run(HOSTWATCH, &operator, &[]));
        // The collector runs without the root's key.
        std::fs::rename(pki.join("ca.key"), dir.path().join("ca.key.offline")).unwrap();
        let (listen, enroll_listen) = (free_port(), free_port());
        let collector_toml = dir.path().join("collector.toml");
        std::fs::write(
            &collector_toml,
            format!(
                "listen = \"127.0.0.1:{listen}\"\nenroll_listen = \"127.0.0.1:{enroll_listen}\"\ndata_dir = \"data\"\n\
                 [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/collector-main.pem\"\nkey = \"pki/collector-main.key\"\n\
                 [enroll]\nissuer_cert = \"pki/issuing.pem\"\nissuer_key = \"pki/issuing.key\"\ncert_lifetime = \"{LIFETIME}\"\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("cli.toml"),
            format!(
                "collector = \"127.0.0.1:{listen}\"\nserver_name = \"localhost\"\n\
                 [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/operator-alice.pem\"\nkey = \"pki/operator-alice.key\"\n"
            ),
        )
        .unwrap();
        let collector = Process::start(
            Path::new(COLLECTOR),
            &collector_toml,
            dir.path().join("collector.log"),
        );
        let operator = TlsFiles {
            ca: pki.join("ca.pem"),
            cert: pki.join("operator-alice.pem"),
            key: pki.join("operator-alice.key"),
        };
        Site {
            pin,
            grpc: format!("127.0.0.1:{listen}").parse().unwrap(),
            enroll: format!("127.0.0.1:{enroll_listen}"),
            operator,
            collector,
            dir,
        }
    }

    /// `hostwatch --config cli.toml ARGS`.
    fn cli(&self, args: &[&str]) -> Output {
        let cli = p(&self.dir.path().join("cli.toml"));
        run(HOSTWATCH, &[&["--config", &cli][..], args].concat(), &[])
    }

    /// `hostwatch-agent enroll` for `host` with `token`, run in the
    /// site's directory: files in `<host>`, state in `<host>/state`, as
    /// an operator would type them (relative).
    fn enroll(&self, host: &str, token: &str, extra: &[&str]) -> Output {
        let dir = Path::new(host);
        let user = match service_user(host) {
            Some(user) => user.name,
            None => {
                nix::unistd::User::from_uid(nix::unistd::geteuid())
                    .unwrap()
                    .unwrap()
                    .name
            }
        };
        let args = [
            "enroll",
            "--collector",
            &self.enroll,
            "--ca-pin",
            &self.pin,
            "--host-id",
            host,
            "--dir",
            &p(dir),
            "--state-dir",
            &p(&dir.join("state")),
            "--user",
            &user,
        ];
        run_in(
            self.dir.path(),
            AGENT,
            &[&args[..], extra].concat(),
            &[("HOSTWATCH_ENROLL_TOKEN", token)],
        )
    }

    /// The raw points of `metric` for `host` in the last hour, through the
    /// query API; `None` while the collector cannot answer.
    async fn series(&self, host: &str, metric: &str) -> Option<SeriesPoints> {
        host_series_as(self.operator.clone(), self.grpc, host, metric)
            .await?
            .into_iter()
            .next()
    }

    /// The last stored value of the agent's self metric `metric`.
    async fn last(&self, host: &str, metric: &str) -> Option<f64> {
        self.series(host, metric).await?.values.last().copied()
    }

    /// The batch sequence numbers stored for `host`, checked to run from 1
    /// without a hole; the last one.
    async fn batches_without_a_gap(&self, host: &str) -> f64 {
        let seqs = self
            .series(host, "hostwatch_agent_batches_total")
            .await
            .unwrap()
            .values;
        assert_eq!(seqs.first(), Some(&1.0), "{host}: {seqs:?}");
        for pair in seqs.windows(2) {
            assert_eq!(pair[1], pair[0] + 1.0, "{host}: a gap: {seqs:?}");
        }
        *seqs.last().unwrap()
    }
}

/// The user `host`'s agent runs as, when not the test's: web-1's is
/// `nobody` when the test runs as root (the module's doc says why).
fn service_user(host: &str) -> Option<nix::unistd::User> {
    (host == "web-1" && nix::unistd::geteuid().is_root())
        .then(|| nix::unistd::User::from_name("nobody").unwrap())
        .flatten()
}

/// `dir` as the packages make `/etc/hostwatch`: root's, and readable by
/// the group of `user` only (the site's directory made passable).
fn packaged_config_dir(site: &Path, dir: &Path, user: &nix::unistd::User) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(site, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(dir).unwrap();
    std::os::unix::fs::chown(dir, Some(0), Some(user.gid.as_raw())).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).unwrap();
}

/// An enrolled host: its files and its agent, running.
struct Host {
    name: &'static str,
    tls: TlsFiles,
    enrolled_serial: String,
    enrolled_not_after_ms: i64,
    agent: Process,
}

impl Host {
    /// Enrolls `name` with `token` and starts its agent from the
    /// agent.toml enroll wrote (test intervals added).
    fn enroll_and_start(site: &Site, name: &'static str, token: &str) -> Self {
        let dir = site.dir.path().join(name);
        let user = service_user(name);
        match &user {
            Some(user) => packaged_config_dir(site.dir.path(), &dir, user),
            None if name == "web-1" => println!(
                "NOT RUN: web-1's agent as another user with the packages' layout (needs root)"
            ),
            None => {}
        }
        let out = ok("enroll", site.enroll(name, token, &[]));
        let said = |key: &str| {
            out.split(key)
                .nth(1)
                .and_then(|rest| rest.split([' ', ')', ';']).next())
                .unwrap_or_else(|| panic!("no {key:?} in {out:?}"))
                .to_owned()
        };
        assert_eq!(said("enrolled "), name, "{out}");
        let enrolled_serial = said("certificate serial ");
        let tls = TlsFiles {
            ca: dir.join("agent-ca.pem"),
            cert: dir.join("state/pki/agent.pem"),
            key: dir.join("state/pki/agent.key"),
        };
        if let Some(user) = &user {
            use std::os::unix::fs::MetadataExt;
            for (path, owner) in [
                (&dir.join("agent.toml"), 0),
                (&tls.ca, 0),
                (&tls.cert, user.uid.as_raw()),
                (&tls.key, user.uid.as_raw()),
                (&dir.join("state"), user.uid.as_raw()),
                (&dir.join("state/pki"), user.uid.as_raw()),
            ] {
                let meta = std::fs::metadata(path).unwrap();
                assert_eq!(meta.uid(), owner, "{}", path.display());
            }
        }
        assert_eq!(serial(&tls), enrolled_serial);
        let (_, enrolled_not_after_ms) = tls.cert_validity_ms().unwrap();
        let agent_toml = dir.join("agent.toml");
        let written = std::fs::read_to_string(&agent_toml).unwrap();
        std::fs::write(
            &agent_toml,
            format!(
                "interval = \"200ms\"\ntls_check_interval = \"200ms\"\n{written}\n[limits]\nmax_backoff = \"500ms\"\n"
            ),
        )
        .unwrap();
        let agent = Process::start_as(
            Path::new(AGENT),
            &agent_toml,
            site.dir.path().join(format!("{name}.log")),
            user.as_ref(),
        );
        Host {
            name,
            tls,
            enrolled_serial,
            enrolled_not_after_ms,
            agent,
        }
    }
}

/// The serial of the certificate in `tls.cert`.
fn serial(tls: &TlsFiles) -> String {
    let pem = std::fs::read(&tls.cert).unwrap();
    let der = rustls::pki_types::pem::PemObject::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap();
    hostwatch_pki::certificate_serial_hex(&der).unwrap()
}

/// Whether the collector at `addr` renews a certificate for a peer with
/// `tls` (admitted at the handshake and not revoked); a renewal refused
/// only for coming soon after the agent's own (enroll.min_renew_interval,
/// checked after revocation) counts.
async fn renews(tls: TlsFiles, addr: SocketAddr, host: &str) -> bool {
    let Ok(channel) = channel(tls, addr).await else {
        return false;
    };
    let (_, csr) = hostwatch_pki::enroll::agent_request(host).unwrap();
    match IngestClient::new(channel).renew(RenewRequest { csr }).await {
        Ok(_) => true,
        Err(status) => status.code() == tonic::Code::ResourceExhausted,
    }
}

#[tokio::test]
async fn the_readme_deployment_enrolls_renews_and_revokes() {
    let site = Site::start();
    // The collector may still be starting: asked until it answers.
    let created = eventually(WAIT, "an enrollment token", || {
        let out = site.cli(&[
            "token", "create", "--enroll", "--uses", "3", "--ttl", "1h", "--hosts", "web-*",
        ]);
        async move { out.status.success().then_some(out) }
    })
    .await;
    let token = text(&created.stdout).trim().to_owned();
    // The command to run on each host, with the pin, the token kept out of it.
    let hint = text(&created.stderr);
    assert!(
        hint.contains("HOSTWATCH_ENROLL_TOKEN=<token> hostwatch-agent enroll")
            && hint.contains(&format!("--ca-pin {}", site.pin))
            && !hint.contains(&token),
        "{hint}"
    );
    let enroll = site.enroll.clone();
    eventually(WAIT, "the enrollment listener", || {
        let enroll = enroll.clone();
        async move { tokio::net::TcpStream::connect(enroll).await.ok().map(drop) }
    })
    .await;
    let hosts = [
        Host::enroll_and_start(&site, "web-1", &token),
        Host::enroll_and_start(&site, "web-2", &token),
    ];
    // Enrolled once: the key stays unless --replace (nothing sent).
    let again = site.enroll("web-2", &token, &[]);
    assert_eq!(again.status.code(), Some(64));
    assert!(text(&again.stderr).contains("--replace"), "{again:?}");
    let tokens = ok("token list", site.cli(&["token", "list"]));
    assert!(
        tokens.contains("1/3") && tokens.contains("web-*"),
        "{tokens}"
    );
    for host in &hosts {
        eventually(WAIT, &format!("{}'s batches", host.name), || {
            site.last(host.name, "hostwatch_agent_batches_total")
        })
        .await;
        // The spool is in the state directory given to enroll.
        let spool = site.dir.path().join(host.name).join("state/spool");
        assert!(spool.is_dir(), "{}", spool.display());
    }
    // The inventory: each host with its kernel, agent version and
    // certificate expiry.
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let listed = ok("hosts", site.cli(&["hosts"]));
    let header = listed.lines().next().unwrap();
    assert!(
        header.contains("KERNEL") && header.contains("CERT EXPIRES"),
        "{listed}"
    );
    for name in ["web-1", "web-2"] {
        let line = listed.lines().find(|l| l.starts_with(name));
        let line = line.unwrap_or_else(|| panic!("{listed}"));
        assert!(
            line.contains(kernel.trim()) && line.contains(env!("CARGO_PKG_VERSION")),
            "{listed}"
        );
    }

    // Renewed twice each (a renewed certificate renews too), past the
    // enrolled certificate's expiry.
    for host in &hosts {
        let metric = "hostwatch_agent_certificate_renewals_total";
        eventually(
            RENEW_WAIT,
            &format!("two renewals of {}", host.name),
            || async { site.last(host.name, metric).await.filter(|n| *n >= 2.0) },
        )
        .await;
        assert_ne!(serial(&host.tls), host.enrolled_serial, "{}", host.name);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&host.tls.key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", host.name);
        let ratio = "hostwatch_agent_certificate_lifetime_left_ratio";
        let ratio = site.last(host.name, ratio).await.unwrap();
        assert!(ratio > 0.0 && ratio <= 1.0, "{ratio}");
        let log = host.agent.log();
        assert!(log.contains("certificate renewed"), "{log}");
        assert!(!log.contains("could not be saved"), "{log}");
        eventually(
            WAIT,
            "a batch after the enrolled certificate expired",
            || async {
                let series = site
                    .series(host.name, "hostwatch_agent_batches_total")
                    .await?;
                let last = *series.timestamps_ms.last()?;
                (last > host.enrolled_not_after_ms + 1_000).then_some(())
            },
        )
        .await;
        site.batches_without_a_gap(host.name).await;
    }
    let log = site.collector.log();
    assert!(log.contains("agent certificate renewed"), "{log}");
    revoke_one_keep_the_other(&site, &hosts, &token).await;
    let [web1, web2] = hosts;
    web1.agent.terminate(WAIT).await;
    web2.agent.terminate(WAIT).await;
    assert!(site.collector.terminate(WAIT).await.success());
}

/// `hostwatch hosts revoke web-1`: its stream closed, its reconnections
/// and its enrollment with the old token refused; web-2 streams on.
async fn revoke_one_keep_the_other(site: &Site, hosts: &[Host; 2], token: &str) {
    let [web1, web2] = hosts;
    let agent_log_before = web1.agent.log().len();
    let said = ok(
        "hosts revoke",
        site.cli(&["hosts", "revoke", "web-1", "--reason", "decommissioned"]),
    );
    let closed: u32 = said
        .split(" connection(s) closed")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    assert!(closed >= 1, "its stream was open: {said}");
    let web2_at_revocation = site.batches_without_a_gap("web-2").await;
    // The certificate web-1 holds now is among those denied (a renewal
    // answered just before the revocation may still be being written),
    // each serial said once, in one form.
    let denied: Vec<&str> = said
        .split("serials denied: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("{said}"))
        .split(", ")
        .collect();
    let mut distinct = denied.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), denied.len(), "{said}");
    eventually(WAIT, "web-1's certificate denied", || async {
        denied.contains(&serial(&web1.tls).as_str()).then_some(())
    })
    .await;
    assert!(!renews(web1.tls.clone(), site.grpc, "web-1").await);
    eventually(WAIT, "web-1's reconnection refused", || async {
        let log = site.collector.log();
        log.lines()
            .any(|l| l.contains("connection refused: revoked") && l.contains("agent/web-1"))
            .then_some(())
    })
    .await;
    eventually(WAIT, "web-1's agent disconnected", || async {
        let log = web1.agent.log();
        log[agent_log_before..]
            .contains("not connected to the collector")
            .then_some(())
    })
    .await;
    // And told why: the handshake's certificate_revoked alert.
    eventually(WAIT, "web-1's agent saying it was revoked", || async {
        let log = web1.agent.log();
        log[agent_log_before..]
            .contains("refused this agent's certificate: it was revoked")
            .then_some(())
    })
    .await;
    // The token still has a use, but not for web-1.
    let again = site.enroll("web-1", token, &["--replace"]);
    let refusal = text(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{refusal}");
    assert!(
        refusal.contains("revoked") && !refusal.contains(token),
        "{refusal}"
    );
    let revoked = ok("hosts revoked", site.cli(&["hosts", "revoked", "--json"]));
    assert!(
        revoked.contains("\"web-1\"") && revoked.contains("decommissioned"),
        "{revoked}"
    );
    assert!(!revoked.contains("web-2"), "{revoked}");
    // Listed as revoked, not as down; web-2 as up.
    let listed = ok("hosts", site.cli(&["hosts"]));
    let status = |host: &str| {
        let line = listed.lines().find(|l| l.starts_with(host));
        let line = line.unwrap_or_else(|| panic!("{listed}"));
        line.split_whitespace().nth(1).unwrap().to_owned()
    };
    assert_eq!(
        (status("web-1"), status("web-2")),
        ("revoked".to_owned(), "up".to_owned()),
        "{listed}"
    );
    // Who did it, named as the token list names who made the token.
    let revoked: serde_json::Value = serde_json::from_str(&revoked).unwrap();
    let tokens = ok("token list", site.cli(&["token", "list", "--json"]));
    let tokens: serde_json::Value = serde_json::from_str(&tokens).unwrap();
    assert_eq!(revoked[0]["revoked_by"], "alice", "{revoked}");
    assert_eq!(tokens[0]["created_by"], "alice", "{tokens}");
    // A name no host has: revoked all the same, with a warning.
    let typo = site.cli(&["hosts", "revoke", "web-3"]);
    assert!(typo.status.success(), "{typo:?}");
    let warning = text(&typo.stderr);
    assert!(
        warning.contains("web-3 is not a host this collector knows"),
        "{warning}"
    );
    // web-2 streams on, on a certificate still renewed.
    eventually(WAIT, "web-2's batches after the revocation", || async {
        let last = site.last("web-2", "hostwatch_agent_batches_total").await?;
        (last > web2_at_revocation + 5.0).then_some(())
    })
    .await;
    site.batches_without_a_gap("web-2").await;
    assert!(renews(web2.tls.clone(), site.grpc, "web-2").await);
}
