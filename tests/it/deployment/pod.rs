//! The Kubernetes example (`deploy/kubernetes/`) run the way a kubelet runs
//! it, as far as this machine allows: no kubelet and no registry, so the
//! test reads the manifests and does the kubelet's part itself.
//!
//! Exercised from the manifests as written: a pod sandbox (a pause process
//! holding the PID and network namespaces; `shareProcessNamespace: true`
//! puts every container in its PID namespace, all share its loopback); the
//! volumes (emptyDir, on tmpfs for `medium: Memory` with `sizeLimit`;
//! ConfigMap and Secret volumes written like the kubelet's atomic writer,
//! `..data` symlink and all, with `defaultMode` and the `fsGroup`
//! ownership rules); each container's image (the cached Debian rootfs, with
//! what the image adds: rekey's binary, nginx-unprivileged's nginx.conf and
//! uid), `command`/`args` over the image's entrypoint, `runAsUser`,
//! `runAsGroup`, `fsGroup` as a supplementary group, `runAsNonRoot`,
//! `readOnlyRootFilesystem`, `capabilities.drop`,
//! `allowPrivilegeEscalation: false` (no_new_privs), `readOnly` mounts;
//! the native sidecar's ordering (the app starts only after rekey's
//! startup probe passes) and its probes (HTTP GET on the named port, from
//! inside the pod's network namespace rather than the node). Not
//! exercised: the seccomp profile, resource limits (rekey's resident memory
//! is compared with its limit instead), image pulls, the Service and
//! Prometheus.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_norway::Value;

use super::rootfs;
use crate::support::scorecard::Scenario;
use crate::support::{bin, http, live_binary, rss_kib, served_fingerprint, wait_until};

const SUITE: &str = "deployment";

mod kubelet;
use kubelet::*;
use rekey::status::{CredentialStatus, Handoff, RotateResult};

fn manifests() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut out = Vec::new();
    for f in ["configmap.yaml", "deployment.yaml"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            out.push(serde::Deserialize::deserialize(doc).unwrap());
        }
    }
    out
}

fn by_kind_name<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn seq(v: &Value) -> Vec<Value> {
    v.as_sequence().cloned().unwrap_or_default()
}

fn text(v: &Value) -> String {
    v.as_str().map(str::to_owned).unwrap_or_default()
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    out.status.success().then_some(()).ok_or_else(|| {
        format!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A file mode as Kubernetes reads it: YAML 1.1, where `0440` is octal
/// (serde_norway, a YAML 1.2 parser, leaves `0440` a string).
fn file_mode(v: &Value) -> Option<u32> {
    match v.as_u64() {
        Some(n) => Some(n as u32),
        None => v
            .as_str()
            .filter(|s| s.starts_with('0'))
            .and_then(|s| u32::from_str_radix(s, 8).ok()),
    }
}

/// `1Mi` → bytes (the quantities the example uses).
fn quantity(q: &str) -> u64 {
    let (n, mult) = [("Ki", 1u64 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)]
        .iter()
        .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
        .unwrap_or((q, 1));
    n.parse::<u64>().expect("a quantity") * mult
}

#[test]
fn the_kubernetes_example_pod_starts_rotates_and_stays_ready() {
    let sc = Scenario::new(
        SUITE,
        "Kubernetes example pod, run like a kubelet (native sidecar, nginx-unprivileged)",
    );
    let (Some(_), Some(_), Some(_)) = (
        live_binary("debootstrap", "Debian package debootstrap"),
        live_binary("unshare", "Debian package util-linux"),
        live_binary("ip", "Debian package iproute2"),
    ) else {
        return sc.skip("debootstrap, unshare or ip missing");
    };
    let Some(mut sc) = sc.require_root("needs root to make namespaces") else {
        return;
    };
    let base = rootfs::rootfs().unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::Builder::new()
        .prefix("pod-")
        .tempdir_in(rootfs::cache_dir())
        .unwrap();
    let docs = manifests();
    let deploy = by_kind_name(&docs, "Deployment", "web");
    let spec = deploy["spec"]["template"]["spec"].clone();
    assert_eq!(
        spec["shareProcessNamespace"], true,
        "this harness runs shared-PID pods"
    );

    // `kubectl create secret generic web-rekey-admin-token --from-literal=token=...`
    let token = {
        let mut b = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
            .unwrap();
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    };
    let secrets = [("web-rekey-admin-token", "token", token.as_str())];
    let volumes = Volumes::create(&work.path().join("volumes"), &docs, &spec, &secrets)
        .unwrap_or_else(|e| panic!("{e}"));
    {
        use std::os::unix::fs::MetadataExt;
        let t = std::fs::metadata(volumes.path("rekey-admin-token").join("token")).unwrap();
        sc.check(
            "the admin token is root:101 0440 (defaultMode + fsGroup)",
            t.uid() == 0 && t.gid() == 101 && t.mode() & 0o777 == 0o440,
            || format!("{}:{} {:o}", t.uid(), t.gid(), t.mode() & 0o7777),
        );
    }
    let sandbox = Sandbox::start().unwrap_or_else(|e| panic!("{e}"));
    let images = work.path().join("images");
    let cwork = work.path().join("containers");

    // Init containers in order; a native sidecar (restartPolicy: Always)
    // keeps running, and the next container starts only once its startup
    // probe passes.
    let sidecar = seq(&spec["initContainers"])
        .into_iter()
        .find(|c| c["restartPolicy"] == "Always")
        .expect("a native sidecar");
    let app_spec = seq(&spec["containers"])
        .into_iter()
        .next()
        .expect("an app container");
    let mut rekey = Container::start(&sidecar, &spec, &sandbox, &volumes, &base, &images, &cwork)
        .unwrap_or_else(|e| panic!("{e}"));
    sc.round();
    let period = Duration::from_secs(
        sidecar["startupProbe"]["periodSeconds"]
            .as_u64()
            .unwrap_or(10),
    );
    let threshold = sidecar["startupProbe"]["failureThreshold"]
        .as_u64()
        .unwrap_or(3);
    let mut started = false;
    for _ in 0..threshold {
        if probe(&sandbox, &sidecar, "startupProbe") {
            started = true;
            break;
        }
        if !rekey.running() {
            break;
        }
        std::thread::sleep(period);
    }
    let ok = sc.check("rekey's startup probe passes", started, || rekey.log());
    if !ok {
        return sc.finish();
    }
    let tls = volumes.path("tls");
    sc.check(
        "the certificate is on the shared volume before the app starts",
        tls.join("fullchain.pem").exists() && tls.join("key.pem").exists(),
        || format!("{:?}", std::fs::read_dir(&tls).map(|d| d.count())),
    );
    let mut app = Container::start(&app_spec, &spec, &sandbox, &volumes, &base, &images, &cwork)
        .unwrap_or_else(|e| panic!("{e}"));

    // From now on the kubelet's readiness view: the sidecar's readiness
    // probe (the app has none, so it is ready while it runs), sampled every
    // 200 ms, stricter than the manifest's period.
    let not_ready: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (not_ready, stop) = (not_ready.clone(), stop.clone());
        let sidecar = sidecar.clone();
        let pause = sandbox.pause;
        std::thread::spawn(move || {
            enter_net(pause);
            let port = probe_port(&sidecar, &sidecar["readinessProbe"]["httpGet"]["port"]);
            let path = text(&sidecar["readinessProbe"]["httpGet"]["path"]);
            let live = text(&sidecar["livenessProbe"]["httpGet"]["path"]);
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for p in [&path, &live] {
                    match http(addr, "GET", p) {
                        Ok((code, _)) if (200..400).contains(&code) => {}
                        other => not_ready.lock().unwrap().push(format!("{p}: {other:?}")),
                    }
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            n
        })
    };

    // nginx starts on the published files; rekey's bootstrap handoff turns
    // verified without a reload.
    let status = |sandbox: &Sandbox| -> CredentialStatus {
        sandbox.net(|| {
            crate::support::cred(std::net::SocketAddr::from(([127, 0, 0, 1], 9464)), "web")
                .unwrap_or_else(|| panic!("web is not in rekey's /status"))
        })
    };
    let served = |sandbox: &Sandbox| -> Option<String> {
        sandbox.net(|| {
            served_fingerprint(
                std::net::SocketAddr::from(([127, 0, 0, 1], 8443)),
                "localhost",
            )
        })
    };
    let until = |secs: u64, f: &mut dyn FnMut() -> bool| {
        wait_until(Instant::now() + Duration::from_secs(secs), || {
            f().then_some(())
        })
        .is_some()
    };
    let verified = until(60, &mut || status(&sandbox).handoff == Handoff::Verified);
    let s = status(&sandbox);
    let fp = s.fingerprint.as_deref().unwrap_or_default().to_string();
    sc.check(
        "the app starts with the manifest's command and serves rekey's certificate (verified)",
        verified && served(&sandbox).as_deref() == Some(fp.as_str()),
        || format!("{s:?}\napp log: {}\nrekey log: {}", app.log(), rekey.log()),
    );
    let (uid, groups) = creds(rekey.pid);
    sc.check(
        "rekey runs as uid 101 with fsGroup 101",
        uid.starts_with("101 ") && groups.split(' ').any(|g| g == "101"),
        || format!("Uid {uid} Groups {groups}"),
    );
    let (uid, _) = creds(app.pid);
    sc.check("nginx runs as uid 101", uid.starts_with("101 "), || {
        format!("Uid {uid}")
    });

    // Rotations through the admin token, each verified against nginx.
    let rotate = |sandbox: &Sandbox, token_file: PathBuf| {
        sandbox.net(move || {
            Command::new(bin())
                .args(["rotate", "web", "--addr", "127.0.0.1:9464", "--token-file"])
                .arg(token_file)
                .output()
                .unwrap()
        })
    };
    let token_file = volumes.path("rekey-admin-token").join("token");
    let mut last = fp;
    for i in 1..=3 {
        sc.round();
        let out = rotate(&sandbox, token_file.clone());
        let s = status(&sandbox);
        let fp = s.fingerprint.as_deref().unwrap_or_default().to_string();
        let now = served(&sandbox);
        sc.check(
            "a rotation is verified and nginx serves it",
            out.status.success()
                && s.handoff == Handoff::Verified
                && fp != last
                && now.as_deref() == Some(fp.as_str()),
            || {
                format!(
                    "rotation {i:?}: {} {s:?} nginx {now:?}",
                    String::from_utf8_lossy(&out.stderr)
                )
            },
        );
        last = fp;
    }

    // A bad reload: nginx's ConfigMap is broken, so SIGHUP leaves nginx on
    // its old config and certificate. rekey rolls back, and the pod stays
    // ready throughout: the app still serves a valid certificate.
    sc.round();
    let broken = [(
        "nginx.conf".to_string(),
        b"this is not nginx config;\n".to_vec(),
    )];
    let fs_group = spec["securityContext"]["fsGroup"]
        .as_u64()
        .map(|g| g as u32);
    atomic_write(&volumes.path("nginx-config"), &broken, 0o644, fs_group).unwrap();
    let out = rotate(&sandbox, token_file.clone());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let s = status(&sandbox);
    sc.check(
        "the failed reload is rolled back",
        !out.status.success()
            && err.contains("rolled back")
            && s.last_rotation.as_ref().map(|r| r.result) == Some(RotateResult::RolledBack),
        || format!("{err:?}\n{s:?}"),
    );
    sc.check(
        "nginx still serves the committed certificate",
        s.fingerprint.as_deref() == Some(last.as_str())
            && served(&sandbox).as_deref() == Some(last.as_str()),
        || format!("{s:?}"),
    );
    let strict = sandbox.net(|| {
        http(
            std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
            "GET",
            "/readyz?strict",
        )
    });
    sc.check(
        "/readyz?strict reports the failed handoff",
        strict.as_ref().is_ok_and(|r| r.0 == 503),
        || format!("{strict:?}"),
    );
    // Held broken for a while (the engine retries meanwhile): the watcher
    // keeps sampling, and /readyz must stay 200 at each sample.
    let held = Instant::now();
    let mut codes = Vec::new();
    while held.elapsed() < Duration::from_secs(3) {
        codes.push(sandbox.net(|| {
            http(
                std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
                "GET",
                "/readyz",
            )
            .map_or(0, |r| r.0)
        }));
        std::thread::sleep(Duration::from_millis(100));
    }
    sc.check(
        "/readyz stays 200 while the app serves the rolled-back certificate",
        codes.iter().all(|c| *c == 200),
        || format!("{codes:?}"),
    );
    let fixed: Vec<(String, Vec<u8>)> = by_kind_name(&docs, "ConfigMap", "web-nginx")["data"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (text(k), text(v).into_bytes()))
        .collect();
    atomic_write(&volumes.path("nginx-config"), &fixed, 0o644, fs_group).unwrap();
    sc.round();
    let out = rotate(&sandbox, token_file.clone());
    let s = status(&sandbox);
    sc.check(
        "after the fix the next rotation is verified",
        out.status.success()
            && s.handoff == Handoff::Verified
            && served(&sandbox) == s.fingerprint.as_deref().map(str::to_owned),
        || format!("{} {s:?}", String::from_utf8_lossy(&out.stderr)),
    );

    stop.store(true, Ordering::Relaxed);
    let samples = watcher.join().unwrap();
    let failures = not_ready.lock().unwrap().clone();
    sc.check(
        "the pod was ready and live at every probe, the failed reload included",
        failures.is_empty() && samples > 10,
        || {
            format!(
                "{} of {samples} probes failed: {failures:?}",
                failures.len()
            )
        },
    );
    let limit = sidecar["resources"]["limits"]["memory"]
        .as_str()
        .map(quantity)
        .unwrap_or(u64::MAX);
    let rss = rss_kib(rekey.pid) * 1024;
    sc.check(
        "rekey stays within its memory limit",
        rss > 0 && rss < limit,
        || format!("{rss} bytes, limit {limit}"),
    );
    sc.note(format!(
        "rekey resident {} MiB (debug build), limit {} MiB",
        rss >> 20,
        limit >> 20
    ));
    sc.check(
        "the containers ran throughout",
        app.running() && rekey.running(),
        || format!("{}\n{}", app.log(), rekey.log()),
    );

    // The kubelet stops the app, then the sidecar.
    let app_exit = app.stop(Duration::from_secs(30));
    let rekey_exit = rekey.stop(Duration::from_secs(30));
    sc.check(
        "rekey stops cleanly after the app (exit 0)",
        rekey_exit == Some(0),
        || {
            format!(
                "app {app_exit:?} ({}), rekey {rekey_exit:?}: {}",
                app.name,
                rekey.log()
            )
        },
    );
    sc.finish();
}
