//! The kubelet's part, done by the test: the pod sandbox (namespaces), the
//! volumes with the kubelet's atomic writer, the images built from the
//! cached rootfs, the containers and their HTTP probes.

use super::*;
/// The pod sandbox: a pause process (PID 1 of the pod's PID namespace,
/// holder of its network namespace, loopback up).
pub(super) struct Sandbox {
    pub(super) unshare: Child,
    pub(super) pause: u32,
}

impl Sandbox {
    pub(super) fn start() -> Result<Sandbox, String> {
        let unshare = Command::new("unshare")
            .args([
                "--pid",
                "--net",
                "--fork",
                "--kill-child",
                "--",
                "sleep",
                "infinity",
            ])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let pause = wait_child(unshare.id(), Duration::from_secs(10))
            .ok_or("the pause process did not start")?;
        let s = Sandbox { unshare, pause };
        run(Command::new("nsenter").args([
            "-t",
            &pause.to_string(),
            "-n",
            "ip",
            "link",
            "set",
            "lo",
            "up",
        ]))?;
        Ok(s)
    }

    /// Run `f` on a thread inside the pod's network namespace (what the
    /// kubelet's probes and a client in the pod reach: 127.0.0.1 there).
    pub(super) fn net<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let pause = self.pause;
        std::thread::spawn(move || {
            enter_net(pause);
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// Move the calling thread into the network namespace of process `pid`
/// (a namespace is per thread; processes it spawns inherit it).
pub(super) fn enter_net(pid: u32) {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    // SAFETY: setns on a descriptor we hold open; it affects only this thread.
    let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

/// The first child of `parent`, waiting up to `timeout`.
pub(super) fn wait_child(parent: u32, timeout: Duration) -> Option<u32> {
    wait_until(Instant::now() + timeout, || {
        std::fs::read_dir("/proc").ok()?.find_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: u32 = stat
                .rsplit_once(") ")?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
    })
}

/// A volume's directory on the "node", with the kubelet's layout.
pub(super) struct Volumes {
    pub(super) dir: PathBuf,
    pub(super) tmpfs: Vec<PathBuf>,
}

impl Volumes {
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Create every volume of `spec`. `secrets` holds the Secret data the
    /// docs/operations.md's `kubectl create secret` makes.
    pub(super) fn create(
        dir: &Path,
        docs: &[Value],
        spec: &Value,
        secrets: &[(&str, &str, &str)],
    ) -> Result<Volumes, String> {
        let fs_group = spec["securityContext"]["fsGroup"]
            .as_u64()
            .map(|g| g as u32);
        let mut v = Volumes {
            dir: dir.to_path_buf(),
            tmpfs: Vec::new(),
        };
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        for vol in seq(&spec["volumes"]) {
            let name = text(&vol["name"]);
            let path = v.path(&name);
            std::fs::create_dir(&path).map_err(|e| e.to_string())?;
            if vol["emptyDir"].is_mapping() {
                let e = &vol["emptyDir"];
                if e["medium"] == "Memory" {
                    let size = e["sizeLimit"].as_str().map(quantity);
                    let opts =
                        size.map_or("mode=0777".to_string(), |s| format!("size={s},mode=0777"));
                    run(Command::new("mount")
                        .args(["-t", "tmpfs", "-o", &opts, "tmpfs"])
                        .arg(&path))?;
                    v.tmpfs.push(path.clone());
                }
                chmod(&path, 0o777);
                if let Some(g) = fs_group {
                    chown(&path, None, Some(g));
                    chmod(&path, 0o2777);
                }
            } else if vol["configMap"].is_mapping() {
                let cm = by_kind_name(docs, "ConfigMap", &text(&vol["configMap"]["name"]));
                let files: Vec<(String, Vec<u8>)> = cm["data"]
                    .as_mapping()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (text(k), text(v).into_bytes()))
                    .collect();
                let mode = file_mode(&vol["configMap"]["defaultMode"]).unwrap_or(0o644);
                atomic_write(&path, &files, mode, fs_group)?;
            } else if vol["secret"].is_mapping() {
                // Secrets live on a tmpfs on the node, like the kubelet's.
                run(Command::new("mount")
                    .args(["-t", "tmpfs", "-o", "mode=0755", "tmpfs"])
                    .arg(&path))?;
                v.tmpfs.push(path.clone());
                let secret = text(&vol["secret"]["secretName"]);
                let files: Vec<(String, Vec<u8>)> = secrets
                    .iter()
                    .filter(|(s, _, _)| *s == secret)
                    .map(|(_, k, val)| (k.to_string(), val.as_bytes().to_vec()))
                    .collect();
                if files.is_empty() {
                    return Err(format!("Secret {secret} does not exist"));
                }
                let mode = file_mode(&vol["secret"]["defaultMode"]).unwrap_or(0o644);
                atomic_write(&path, &files, mode, fs_group)?;
            } else {
                return Err(format!("volume {name}: a kind this harness does not make"));
            }
        }
        Ok(v)
    }
}

impl Drop for Volumes {
    fn drop(&mut self) {
        for t in self.tmpfs.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(t).status();
        }
    }
}

pub(super) fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub(super) fn chown(p: &Path, uid: Option<u32>, gid: Option<u32>) {
    nix::unistd::chown(
        p,
        uid.map(nix::unistd::Uid::from_raw),
        gid.map(nix::unistd::Gid::from_raw),
    )
    .unwrap();
}

/// The kubelet's atomic writer: the files in a timestamped directory,
/// `..data` pointing at it, and one symlink per key through `..data`. With
/// an fsGroup, files get that group and at least 0440 (read-only volumes),
/// directories the group and setgid. An update writes a new directory and
/// flips `..data`.
pub(super) fn atomic_write(
    dir: &Path,
    files: &[(String, Vec<u8>)],
    mode: u32,
    fs_group: Option<u32>,
) -> Result<(), String> {
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let gen = dir.join(&stamp);
    std::fs::create_dir(&gen).map_err(|e| e.to_string())?;
    chmod(&gen, 0o755);
    for (name, bytes) in files {
        let f = gen.join(name);
        std::fs::write(&f, bytes).map_err(|e| e.to_string())?;
        chmod(&f, mode);
        if let Some(g) = fs_group {
            chown(&f, None, Some(g));
            chmod(&f, mode | 0o440);
        }
    }
    if let Some(g) = fs_group {
        for d in [dir, gen.as_path()] {
            chown(d, None, Some(g));
            use std::os::unix::fs::PermissionsExt;
            let m = std::fs::metadata(d).unwrap().permissions().mode() & 0o7777;
            chmod(d, m | 0o2000 | 0o550);
        }
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, dir.join("..data")).map_err(|e| e.to_string())?;
    for (name, _) in files {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link)
                .map_err(|e| e.to_string())?;
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

/// What an image adds to the base rootfs, and its entrypoint and cmd.
pub(super) struct Image {
    pub(super) layer: PathBuf,
    pub(super) entrypoint: Vec<String>,
    pub(super) cmd: Vec<String>,
}

/// The images the example names, built from the cached rootfs: `rekey` as
/// the Dockerfile makes it, and nginx-unprivileged (uid 101, its own
/// nginx.conf with `pid /tmp/nginx.pid;`, listening on 8080).
pub(super) fn image(name: &str, dir: &Path) -> Result<Image, String> {
    let layer = dir.join(name.replace(['/', ':'], "_"));
    std::fs::create_dir_all(&layer).map_err(|e| e.to_string())?;
    let sv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if name.starts_with("rekey:") {
        let d = layer.join("usr/local/bin");
        std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
        std::fs::copy(bin(), d.join("rekey")).map_err(|e| e.to_string())?;
        Ok(Image {
            layer,
            entrypoint: sv(&["rekey", "run"]),
            cmd: sv(&["-c", "/etc/rekey/rekey.toml"]),
        })
    } else if name.starts_with("nginxinc/nginx-unprivileged:") {
        let etc = layer.join("etc/nginx");
        std::fs::create_dir_all(etc.join("conf.d")).map_err(|e| e.to_string())?;
        std::fs::write(etc.join("nginx.conf"), NGINX_UNPRIVILEGED_CONF)
            .map_err(|e| e.to_string())?;
        std::fs::write(
            etc.join("conf.d/default.conf"),
            "server {\n    listen 8080;\n    location / { root /usr/share/nginx/html; }\n}\n",
        )
        .map_err(|e| e.to_string())?;
        Ok(Image {
            layer,
            entrypoint: sv(&["/docker-entrypoint.sh"]),
            cmd: sv(&["nginx", "-g", "daemon off;"]),
        })
    } else {
        Err(format!("no image {name} here"))
    }
}

/// The nginx.conf nginx-unprivileged ships (Debian's layout, no `user`,
/// the pid file and temp paths in /tmp): the `pid` line is why
/// `-g "pid ...;"` cannot be used with it.
pub(super) const NGINX_UNPRIVILEGED_CONF: &str = "worker_processes  auto;
error_log  /var/log/nginx/error.log notice;
pid        /tmp/nginx.pid;
events {
    worker_connections  1024;
}
http {
    proxy_temp_path /tmp/proxy_temp;
    client_body_temp_path /tmp/client_temp;
    fastcgi_temp_path /tmp/fastcgi_temp;
    uwsgi_temp_path /tmp/uwsgi_temp;
    scgi_temp_path /tmp/scgi_temp;
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;
    include /etc/nginx/conf.d/*.conf;
}
";

/// A running container: `nsenter` (on the node) whose child is the
/// container's process in the pod's namespaces.
pub(super) struct Container {
    pub(super) name: String,
    pub(super) nsenter: Child,
    pub(super) pid: u32,
    pub(super) log: PathBuf,
}

impl Container {
    /// Start `c` (a container of the pod spec `spec`) in `sandbox`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        c: &Value,
        spec: &Value,
        sandbox: &Sandbox,
        volumes: &Volumes,
        base: &Path,
        images: &Path,
        work: &Path,
    ) -> Result<Container, String> {
        let name = text(&c["name"]);
        let img = image(&text(&c["image"]), images)?;
        let psc = &spec["securityContext"];
        let csc = &c["securityContext"];
        let pick = |k: &str| csc[k].as_u64().or(psc[k].as_u64());
        let uid = pick("runAsUser").ok_or("no runAsUser")?;
        let gid = pick("runAsGroup").unwrap_or(uid);
        let non_root = csc["runAsNonRoot"]
            .as_bool()
            .or(psc["runAsNonRoot"].as_bool());
        if non_root == Some(true) && uid == 0 {
            return Err(format!("{name}: runAsNonRoot with uid 0"));
        }
        let mut groups = vec![gid.to_string()];
        if let Some(g) = psc["fsGroup"].as_u64() {
            groups.push(g.to_string());
        }
        // Kubernetes: command replaces the entrypoint, args the cmd; with
        // only a command, the image's cmd is dropped.
        let command: Vec<String> = match (c["command"].as_sequence(), c["args"].as_sequence()) {
            (Some(cmd), args) => cmd
                .iter()
                .chain(args.into_iter().flatten())
                .map(text)
                .collect(),
            (None, Some(args)) => img
                .entrypoint
                .iter()
                .cloned()
                .chain(args.iter().map(text))
                .collect(),
            (None, None) => img
                .entrypoint
                .iter()
                .cloned()
                .chain(img.cmd.iter().cloned())
                .collect(),
        };
        let drop_all = seq(&csc["capabilities"]["drop"]).iter().any(|d| d == "ALL");
        let no_new_privs = csc["allowPrivilegeEscalation"] == false;
        let read_only_root = csc["readOnlyRootFilesystem"] == true;

        let dir = work.join(&name);
        for d in ["upper", "work", "root"] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| e.to_string())?;
        }
        let root = dir.join("root");
        let q = |p: &Path| format!("'{}'", p.display());
        let mut script = vec![
            "set -e".to_string(),
            format!(
                "mount -t overlay overlay -o lowerdir={}:{},upperdir={},workdir={} {}",
                img.layer.display(),
                base.display(),
                dir.join("upper").display(),
                dir.join("work").display(),
                q(&root)
            ),
            // /proc of the pod's PID namespace; a minimal /dev.
            format!("mount -t proc proc {}/proc", q(&root)),
            format!("mount -t tmpfs -o mode=0755 tmpfs {}/dev", q(&root)),
        ];
        for dev in ["null", "zero", "random", "urandom"] {
            script.push(format!(
                "touch {r}/dev/{dev} && mount --bind /dev/{dev} {r}/dev/{dev}",
                r = q(&root)
            ));
        }
        for (l, t) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            script.push(format!("ln -s {t} {}/dev/{l}", q(&root)));
        }
        let mut mounts = Vec::new();
        for m in seq(&c["volumeMounts"]) {
            let target = root.join(text(&m["mountPath"]).trim_start_matches('/'));
            script.push(format!("mkdir -p {}", q(&target)));
            mounts.push((
                volumes.path(&text(&m["name"])),
                target,
                m["readOnly"] == true,
            ));
        }
        for (src, target, ro) in &mounts {
            script.push(format!("mount --bind {} {}", q(src), q(target)));
            if *ro {
                script.push(format!("mount -o remount,bind,ro {}", q(target)));
            }
        }
        if read_only_root {
            script.push(format!("mount -o remount,bind,ro {}", q(&root)));
        }
        // What runc does: the container's user owns its stdout and stderr
        // pipes, so it may reopen /dev/stdout.
        script.push(format!("chown {uid}:{gid} /proc/self/fd/1 /proc/self/fd/2"));
        let mut setpriv = format!(
            "exec chroot {} /usr/bin/setpriv --reuid={uid} --regid={gid} --groups={} --inh-caps=-all",
            q(&root),
            groups.join(",")
        );
        if drop_all {
            setpriv.push_str(" --bounding-set=-all");
        }
        if no_new_privs {
            setpriv.push_str(" --no-new-privs");
        }
        setpriv.push_str(
            " -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/",
        );
        for a in &command {
            setpriv.push_str(&format!(" '{}'", a.replace('\'', r"'\''")));
        }
        script.push(setpriv);

        let log = work.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        // Pipes, like a container runtime's: a program may reopen
        // /dev/stdout, which a file owned by root would refuse.
        let mut nsenter = Command::new("nsenter")
            .args(["-t", &sandbox.pause.to_string(), "--pid", "--net", "--"])
            .args([
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
            ])
            .arg(script.join("\n"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let out = Arc::new(Mutex::new(out));
        for pipe in [
            nsenter
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            nsenter
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let out = out.clone();
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = writeln!(out.lock().unwrap(), "{line}");
                }
            });
        }
        let pid = wait_child(nsenter.id(), Duration::from_secs(10))
            .ok_or("the container did not start")?;
        Ok(Container {
            name,
            nsenter,
            pid,
            log,
        })
    }

    pub(super) fn running(&mut self) -> bool {
        matches!(self.nsenter.try_wait(), Ok(None))
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait up to the grace period; the exit code.
    pub(super) fn stop(&mut self, grace: Duration) -> Option<i32> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if let Some(st) = wait_until(Instant::now() + grace, || {
            self.nsenter.try_wait().ok().flatten()
        }) {
            return st.code();
        }
        let _ = self.nsenter.kill();
        let _ = self.nsenter.wait();
        None
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.running() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = self.nsenter.wait();
        }
    }
}

/// The port a probe names (a number, or a container port's name).
pub(super) fn probe_port(c: &Value, port: &Value) -> u16 {
    port.as_u64().map(|p| p as u16).unwrap_or_else(|| {
        let name = text(port);
        seq(&c["ports"])
            .iter()
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no port named {name}")) as u16
    })
}

/// One HTTP GET probe inside the pod: success is 200-399, like the kubelet's.
pub(super) fn probe(sandbox: &Sandbox, c: &Value, which: &str) -> bool {
    let get = &c[which]["httpGet"];
    let port = probe_port(c, &get["port"]);
    let path = text(&get["path"]);
    sandbox.net(move || {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        http(addr, "GET", &path).is_ok_and(|(code, _)| (200..400).contains(&code))
    })
}

/// The process's uid and supplementary groups, from /proc.
pub(super) fn creds(pid: u32) -> (String, String) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    (field("Uid:"), field("Groups:"))
}
