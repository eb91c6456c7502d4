//! The shipped unit under a real systemd: a Debian bookworm container booted
//! with systemd-nspawn (systemd is its PID 1), next to Debian's nginx (root
//! master, www-data workers). rekey is installed by running the unit file's
//! header lines as written, with the VM example config (its ACME issuer
//! swapped for a local CA: the container has only loopback). The unit is
//! used unchanged.

use std::path::Path;
use std::time::{Duration, Instant};

use super::container::Container;
use super::rootfs;
use crate::support::scorecard::Scenario;
use crate::support::{bin, live_binary, wait_until};
use rekey::status::{CredentialStatus, Handoff, State};

const SUITE: &str = "deployment";
/// How long the watchdog must stay quiet (WatchdogSec=30s: three periods).
const WATCHDOG_WINDOW: Duration = Duration::from_secs(90);

/// The unit file's install lines (the `#   ` lines of its header comment).
fn install_lines(unit: &str) -> Vec<String> {
    unit.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("#   "))
        .map(str::to_string)
        .collect()
}

/// The VM example config with its ACME issuer replaced by a local CA.
fn example_config() -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/rekey-nginx.example.toml"),
    )
    .unwrap();
    let start = 1 + text
        .find("\n[issuer.le]\n")
        .expect("the example has an [issuer.le] table");
    let end = start
        + text[start..]
            .find("\n\n")
            .expect("a blank line ends the table");
    format!(
        "{}[issuer.le]\ntype = \"local-ca\"   # the test's stand-in for Let's Encrypt{}",
        &text[..start],
        &text[end..]
    )
}

/// nginx as a VM would have it before rekey: a site on 443 serving a
/// placeholder certificate from /etc/nginx/tls.
const NGINX_SITE: &str = "server {
    listen 127.0.0.1:443 ssl;
    server_name www.example.com;
    ssl_certificate     /etc/nginx/tls/fullchain.pem;
    ssl_certificate_key /etc/nginx/tls/key.pem;
    location / { return 200 \"hello\\n\"; }
}
";

/// A placeholder pair, as an installer's snakeoil certificate would be.
const PLACEHOLDER: &str = "mkdir -p /etc/nginx/tls && openssl req -x509 -newkey ec \
    -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=placeholder.invalid -days 2 \
    -keyout /etc/nginx/tls/key.pem -out /etc/nginx/tls/fullchain.pem 2>/dev/null";

/// The fingerprint nginx serves on 127.0.0.1:443 (openssl, not rekey).
const SERVED: &str =
    "echo | openssl s_client -connect 127.0.0.1:443 -servername www.example.com 2>/dev/null \
    | openssl x509 -noout -fingerprint -sha256 | cut -d= -f2 | tr -d : | tr A-F a-f";

/// `rekey status --json` of the credential `nginx`.
/// `nginx`'s status from `rekey status --json` (the `/status` body as is).
fn status(c: &Container) -> Option<CredentialStatus> {
    let out = c.sh("rekey status --json");
    let all: Vec<CredentialStatus> = serde_json::from_slice(&out.stdout).ok()?;
    all.into_iter().find(|x| x.name == "nginx")
}

fn served(c: &Container) -> String {
    format!("sha256:{}", c.run(SERVED).unwrap_or_default().trim())
}

/// Wait for a verified handoff; the status it settled on.
fn verified(c: &Container) -> Option<CredentialStatus> {
    wait_until(Instant::now() + Duration::from_secs(60), || {
        status(c).filter(|s| s.handoff == Handoff::Verified)
    })
}

#[test]
fn the_shipped_unit_runs_under_a_real_systemd_next_to_nginx() {
    let sc = Scenario::new(
        SUITE,
        "systemd unit, real systemd (nspawn) next to Debian's nginx",
    );
    let (Some(_), Some(_)) = (
        live_binary("systemd-nspawn", "Debian package systemd-container"),
        live_binary("debootstrap", "Debian package debootstrap"),
    ) else {
        return sc.skip("systemd-nspawn or debootstrap missing");
    };
    let Some(mut sc) = sc.require_root("needs root to boot a container") else {
        return;
    };
    let rootfs = match rootfs::rootfs() {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    let work = tempfile::Builder::new()
        .prefix("systemd-")
        .tempdir_in(rootfs::cache_dir())
        .unwrap();
    let c = Container::boot(&rootfs, work.path()).unwrap_or_else(|e| panic!("{e}"));
    let journal = |c: &Container| c.journal("rekey");

    // A VM with nginx serving a placeholder, as before rekey arrives.
    let setup = c
        .run(PLACEHOLDER)
        .and_then(|_| c.run("rm -f /etc/nginx/sites-enabled/default"))
        .and_then(|_| c.write("/etc/nginx/sites-enabled/rekey-site", NGINX_SITE))
        .and_then(|_| c.run("systemctl start nginx"));
    sc.check_ok("nginx serves a placeholder", setup);
    let placeholder = served(&c);

    // A checkout inside the container: the binary and systemd/.
    let src = rootfs::own_dir(&c.root, "root/rekey");
    let release = rootfs::own_dir(&src, "target/release");
    std::fs::copy(bin(), release.join("rekey")).unwrap();
    let unit_dir = rootfs::own_dir(&src, "systemd");
    for f in [
        "rekey.service",
        "rekey.sysusers.conf",
        "rekey-nginx.example.toml",
    ] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("systemd")
                .join(f),
            unit_dir.join(f),
        )
        .unwrap();
    }
    let unit = std::fs::read_to_string(unit_dir.join("rekey.service")).unwrap();
    let lines = install_lines(&unit);
    sc.check(
        "the unit's header lists the install steps",
        lines.len() >= 5,
        || format!("{lines:?}"),
    );
    // Every line as written, in the checkout; the config is edited (the
    // header says "then edit it") before the last step starts the service.
    for line in &lines {
        if line.starts_with("systemctl ") {
            sc.check_ok(
                "the edited config is installed",
                c.write("/etc/rekey/rekey.toml", &example_config()),
            );
        }
        sc.check_ok(
            &format!("install step: {line}"),
            c.run(&format!("cd /root/rekey && {line}")).map(|_| ()),
        );
    }

    // The first certificate reaches nginx and is verified.
    sc.round();
    let first = verified(&c);
    let ok = sc.check("the first certificate is verified", first.is_some(), || {
        format!("{:?}\n{}", status(&c), journal(&c))
    });
    if !ok {
        return sc.finish();
    }
    let first = first.unwrap();
    let fp = first.fingerprint.as_deref().unwrap_or_default().to_string();
    let now_served = served(&c);
    sc.check(
        "nginx serves it (openssl)",
        now_served == fp && fp != placeholder,
        || format!("serves {now_served}, status {fp}, placeholder {placeholder}"),
    );
    let text = c.prop("rekey", "StatusText");
    sc.check(
        "STATUS= says ready",
        text.contains("; ready") && !text.contains("handoff"),
        || text.clone(),
    );
    let main_pid = c.prop("rekey", "MainPID");
    let window = Instant::now();

    // Three rotations in a row, each verified against what nginx serves.
    let mut last = fp.clone();
    for i in 1..=3 {
        sc.round();
        let r = c.sh("rekey rotate nginx");
        let s = status(&c);
        let now_served = served(&c);
        let fp = s
            .as_ref()
            .and_then(|s| s.fingerprint.clone())
            .unwrap_or_default();
        sc.check(
            "rekey rotate is verified and nginx serves the new certificate",
            r.status.success()
                && s.as_ref().is_some_and(|s| s.handoff == Handoff::Verified)
                && fp != last
                && now_served == fp,
            || {
                format!(
                    "rotation {i:?}: exit {:?} {}; status {s:?}; nginx serves {now_served:?}",
                    r.status.code(),
                    String::from_utf8_lossy(&r.stderr)
                )
            },
        );
        last = fp;
    }
    let generation = status(&c).and_then(|s| s.generation);

    // systemctl reload re-reads the config (SIGHUP): a team appears.
    sc.round();
    let edited = example_config().replacen(
        "name = \"nginx\"\n",
        "name = \"nginx\"\nteam = \"web-ops\"\n",
        1,
    );
    sc.check_ok(
        "the config is edited",
        c.write("/etc/rekey/rekey.toml", &edited),
    );
    sc.check_ok(
        "systemctl reload rekey",
        c.run("systemctl reload rekey").map(|_| ()),
    );
    let team = wait_until(Instant::now() + Duration::from_secs(20), || {
        status(&c).filter(|s| s.team.as_deref() == Some("web-ops"))
    });
    sc.check("the reload applied the new config", team.is_some(), || {
        journal(&c)
    });

    // The watchdog (WatchdogSec=30s) stays quiet for 90 s.
    sc.round();
    let mut steady = true;
    while window.elapsed() < WATCHDOG_WINDOW {
        steady &= c.prop("rekey", "MainPID") == main_pid && c.prop("rekey", "NRestarts") == "0";
        std::thread::sleep(Duration::from_secs(2));
    }
    let j = journal(&c);
    sc.check(
        "no watchdog timeout and no restart over 90 s",
        steady && !j.contains("Watchdog timeout") && c.prop("rekey", "ActiveState") == "active",
        || format!("MainPID {main_pid} -> {}; {j}", c.prop("rekey", "MainPID")),
    );
    sc.check(
        "systemd receives watchdog pings",
        c.prop("rekey", "WatchdogUSec") == "30s"
            && !c.prop("rekey", "WatchdogTimestamp").is_empty(),
        || {
            c.run("systemctl show rekey -p WatchdogUSec -p WatchdogTimestamp")
                .unwrap_or_default()
        },
    );

    // systemctl restart does not reissue: same generation, same certificate.
    sc.round();
    sc.check_ok(
        "systemctl restart rekey",
        c.run("systemctl restart rekey").map(|_| ()),
    );
    let again = verified(&c);
    sc.check(
        "a restart keeps the committed certificate",
        again.as_ref().is_some_and(|again| {
            again.generation == generation && again.fingerprint.as_deref() == Some(last.as_str())
        }) && served(&c) == last,
        || format!("before gen {generation:?} {last:?}; after {again:?}"),
    );

    honest_reporting_when_proc_hides_nginx(&mut sc, &c, &last);

    // systemctl stop: a clean exit.
    sc.round();
    sc.check_ok(
        "systemctl stop rekey",
        c.run("systemctl stop rekey").map(|_| ()),
    );
    let result = c.prop("rekey", "Result");
    let status_code = c.prop("rekey", "ExecMainStatus");
    sc.check(
        "systemctl stop ends with Result=success",
        result == "success" && status_code == "0",
        || {
            format!(
                "Result={result} ExecMainStatus={status_code}\n{}",
                journal(&c)
            )
        },
    );
    sc.note(format!(
        "install per the unit's header, first certificate verified, 3 rotations verified, reload, {} s watchdog window, restart without reissue, stop",
        WATCHDOG_WINDOW.as_secs()
    ));
    sc.finish();
}

/// The failure the unit used to cause: `ProtectProc=invisible` (a drop-in)
/// hides root's nginx from rekey. A rotation then rolls back and says why
/// in a warning, `rekey status` and STATUS=, while /readyz stays 200 (nginx
/// serves the previous, valid certificate). From scratch (bootstrap) the
/// handoff stays pending with the same reason, and once the drop-in goes a
/// restart tells nginx after all.
fn honest_reporting_when_proc_hides_nginx(sc: &mut Scenario, c: &Container, committed: &str) {
    sc.round();
    let dropin = "mkdir -p /etc/systemd/system/rekey.service.d && printf '[Service]\\nProtectProc=invisible\\n' \
        > /etc/systemd/system/rekey.service.d/hide.conf && systemctl daemon-reload && systemctl restart rekey";
    sc.check_ok("a ProtectProc=invisible drop-in", c.run(dropin).map(|_| ()));
    let r = c.sh("rekey rotate nginx");
    let err = String::from_utf8_lossy(&r.stderr).to_string();
    sc.check(
        "the rotation fails naming the hidden process and the fix",
        !r.status.success()
            && err.contains("hidden from rekey")
            && err.contains("ProtectProc=default"),
        || err.clone(),
    );
    let ready = c.sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9464/readyz");
    sc.check(
        "/readyz stays 200 after the rolled-back handoff",
        ready.stdout == b"200",
        || String::from_utf8_lossy(&ready.stdout).into_owned(),
    );
    let strict = c.sh("rekey status --strict");
    sc.check(
        "rekey status --strict exits 1",
        strict.status.code() == Some(1),
        || String::from_utf8_lossy(&strict.stderr).into_owned(),
    );
    sc.check(
        "nginx still serves the committed certificate",
        served(c) == committed,
        || served(c),
    );
    let text = c.prop("rekey", "StatusText");
    sc.check(
        "STATUS= says ready and why the handoff failed",
        text.contains("; ready")
            && text.contains("handoff failed")
            && text.contains("hidden from rekey"),
        || text.clone(),
    );
    let warned = c
        .run("journalctl -u rekey -o cat --no-pager -p warning")
        .unwrap_or_default();
    sc.check(
        "the failure is a warning in the journal",
        warned.contains("hidden from rekey"),
        || warned.clone(),
    );

    // From scratch: no state, the placeholder back in nginx.
    sc.round();
    let reset = format!(
        "systemctl stop rekey && rm -rf /var/lib/rekey/* /etc/nginx/tls/* && {PLACEHOLDER} && \
         chown -R rekey:rekey /etc/nginx/tls && systemctl reload nginx && systemctl start rekey"
    );
    sc.check_ok("reset to a fresh install", c.run(&reset).map(|_| ()));
    let pending = wait_until(Instant::now() + Duration::from_secs(30), || {
        status(c).filter(|s| {
            s.state == State::Valid
                && s.handoff == Handoff::Pending
                && s.handoff_reason
                    .as_deref()
                    .is_some_and(|r| r.contains("hidden from rekey"))
        })
    });
    sc.check(
        "bootstrap: the handoff is pending with the reason",
        pending.is_some(),
        || format!("{:?}", status(c)),
    );
    let table = c.sh("rekey status");
    let table_text = String::from_utf8_lossy(&table.stdout).to_string();
    sc.check(
        "rekey status shows the reason and exits 0 (ready)",
        table.status.success() && table_text.contains("handoff pending: reload of nginx"),
        || table_text.clone(),
    );
    let text = c.prop("rekey", "StatusText");
    sc.check(
        "STATUS= names the pending handoff and why",
        text.contains("handoff pending") && text.contains("ProtectProc"),
        || text.clone(),
    );
    let warned = c
        .run("journalctl -u rekey -o cat --no-pager -p warning --since=-60s")
        .unwrap_or_default();
    sc.check(
        "the undelivered reload is a warning, not info",
        warned.contains("could not be told to reload"),
        || warned.clone(),
    );
    // The drop-in goes; the restarted daemon tells nginx after all.
    let fix = "rm /etc/systemd/system/rekey.service.d/hide.conf && systemctl daemon-reload && systemctl restart rekey";
    sc.check_ok("the drop-in removed", c.run(fix).map(|_| ()));
    let after = verified(c);
    let now = served(c);
    sc.check(
        "after the fix nginx serves the certificate and it is verified",
        after.as_ref().is_some_and(|after| {
            after.fingerprint.as_deref() == Some(now.as_str()) && after.handoff_reason.is_none()
        }),
        || format!("{after:?}; nginx serves {now:?}"),
    );
}
