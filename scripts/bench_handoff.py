#!/usr/bin/env python3
"""Publish -> verified against a real nginx reloaded with SIGHUP.

Starts nginx (Debian nginx-light) and the release rekey on random loopback
ports in a temp dir, rotates N times with `rekey rotate`, and reports the
median and p90 of last_rotation.handoff_ms (publish, SIGHUP, TLS probes until
the new certificate has been seen for the 100 ms settle period) and of the
whole rotation. Usage: bench_handoff.py REKEY_BINARY [ROUNDS]
"""
import os, statistics, subprocess, sys, tempfile

# The shared helpers sit next to this script; no __pycache__ left in scripts/.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_nginx import free_port, get, nginx_binary, start_nginx, stop, wait, write_nginx_conf

def main():
    rekey = os.path.abspath(sys.argv[1]); rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    nginx = nginx_binary()
    if not nginx:
        print("| publish -> verified (nginx, SIGHUP) | skipped: nginx not installed |"); return
    d = tempfile.mkdtemp(prefix="rekey-bench-")
    procs = []
    try:
        api, app = free_port(), free_port()
        tls = f"{d}/tls"
        write_nginx_conf(d, [f"""server {{ listen 127.0.0.1:{app} ssl; ssl_certificate {tls}/fullchain.pem; ssl_certificate_key {tls}/key.pem;
location / {{ return 200 "ok"; }} }}"""])
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
        procs.append(start_nginx(nginx, d))
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
        stop(procs, d, timeout=5)

main()
