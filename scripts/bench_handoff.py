#!/usr/bin/env python3
"""Publish -> verified against a real nginx reloaded with SIGHUP.

Starts nginx (Debian nginx-light) and the release rekey on random loopback
ports in a temp dir, rotates N times with `rekey rotate`, and reports the
median and p90 of last_rotation.handoff_ms (publish, SIGHUP, TLS probes until
the new certificate has been seen for the 100 ms settle period) and of the
whole rotation. Usage: bench_handoff.py REKEY_BINARY [ROUNDS]
"""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())

def wait(what, pred, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = pred()
            if v:
                return v
        except Exception:
            pass
        time.sleep(0.02)
    sys.exit(f"bench_handoff: timed out waiting for {what}")

def main():
    rekey = os.path.abspath(sys.argv[1]); rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        print("| publish -> verified (nginx, SIGHUP) | skipped: nginx not installed |"); return
    d = tempfile.mkdtemp(prefix="rekey-bench-")
    procs = []
    try:
        api, app = free_port(), free_port()
        tls = f"{d}/tls"
        for sub in ("nginx/tmp", "nginx/logs"):
            os.makedirs(f"{d}/{sub}")
        with open(f"{d}/nginx/nginx.conf", "w") as f:
            f.write(f"""daemon off; master_process on; worker_processes 2; pid {d}/nginx/nginx.pid;
error_log {d}/nginx/logs/error.log;
events {{ worker_connections 64; }}
http {{ access_log off; client_body_temp_path {d}/nginx/tmp/b; proxy_temp_path {d}/nginx/tmp/p;
fastcgi_temp_path {d}/nginx/tmp/f; uwsgi_temp_path {d}/nginx/tmp/u; scgi_temp_path {d}/nginx/tmp/s;
server {{ listen 127.0.0.1:{app} ssl; ssl_certificate {tls}/fullchain.pem; ssl_certificate_key {tls}/key.pem;
location / {{ return 200 "ok"; }} }} }}
""")
        with open(f"{d}/rekey.toml", "w") as f:
            f.write(f"""[daemon]
state_dir = "{d}/state"
listen = "127.0.0.1:{api}"
[issuer.dev]
type = "local-ca"
# One certificate rotated ROUNDS times on purpose: no issuance budget.
max_issuances = "unlimited"
[[certificate]]
name = "web"
issuer = "dev"
dns_names = ["localhost"]
files = {{ cert = "{tls}/cert.pem", key = "{tls}/key.pem", fullchain = "{tls}/fullchain.pem" }}
reload = {{ type = "signal", signal = "HUP", pid_file = "{d}/nginx/nginx.pid" }}
verify = {{ type = "tls", connect = "127.0.0.1:{app}", server_name = "localhost" }}
""")
        log = open(f"{d}/rekey.log", "w")
        procs.append(subprocess.Popen([rekey, "run", "-c", f"{d}/rekey.toml"], stderr=log, stdout=log))
        base = f"http://127.0.0.1:{api}"
        wait("issuance", lambda: get(base + "/status")[0]["state"] == "valid")
        procs.append(subprocess.Popen([nginx, "-p", f"{d}/nginx", "-c", f"{d}/nginx/nginx.conf", "-e", f"{d}/nginx/logs/error.log"],
                                      stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        wait("verified", lambda: get(base + "/status")[0]["handoff"] == "verified")
        handoff, total = [], []
        for _ in range(rounds):
            # Through the admin socket (rotate is not served over TCP without a token).
            out = subprocess.run([rekey, "rotate", "web", "-c", f"{d}/rekey.toml"], capture_output=True, text=True, timeout=130)
            assert out.returncode == 0, out.stderr
            s = get(base + "/status")[0]
            assert s["handoff"] == "verified", s
            handoff.append(s["last_rotation"]["handoff_ms"]); total.append(s["last_rotation"]["duration_ms"])
        q = lambda xs, p: sorted(xs)[min(len(xs) - 1, round((len(xs) - 1) * p))]
        print(f"| publish -> verified (nginx, SIGHUP, {rounds} rounds) | median {statistics.median(handoff):.0f} ms, p90 {q(handoff, 0.9)} ms |")
        print(f"| whole rotation incl. keygen and signing | median {statistics.median(total):.0f} ms |")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except Exception:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)

main()
