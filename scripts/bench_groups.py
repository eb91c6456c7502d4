#!/usr/bin/env python3
"""Many certificates of one nginx: reloads and wall time, with and without
handoff groups.

One real nginx (Debian nginx-light) serves N names by SNI on one loopback
port; each name is its own [[certificate]] reloaded with SIGHUP through the
pid file and verified over TLS with its own SNI. Measured for N = 10 and 50:

  - the first start of a fresh host: nginx already serves a placeholder
    certificate (as with Debian's snakeoil) and rekey starts on an empty
    state dir; from its start until every handoff is verified;
  - all N rotated at once (as after a CA change, or when renewals line
    up): N rotate requests on the admin socket together; until every one
    has answered, verified.

Reloads are nginx's own count: its master's `reconfiguring` notices
(SIGHUPs that arrive together count once, as they cost once); the SIGHUPs
are rekey's own count (its debug line for each signal sent). "one reload
each" is `daemon.reload_window = "0s"`, how every handoff went before
handoff groups; "handoff groups" is the default (200 ms window, 2 s max
wait). Medians of RUNS runs. Prints markdown table rows.

Usage: bench_groups.py REKEY_BINARY [RUNS]
"""
import json, os, shutil, socket, statistics, subprocess, sys, tempfile, threading, time

# The shared helpers sit next to this script; no __pycache__ left in scripts/.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_nginx import free_port, get, nginx_binary, reloads, start_nginx, stop, wait, write_nginx_conf

SIZES = (10, 50)


def post_unix(path, url):
    """POST url on the admin socket; (status, JSON body)."""
    s = socket.socket(socket.AF_UNIX); s.settimeout(130); s.connect(path)
    s.sendall(f"POST {url} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"null")


def signals(d):
    with open(f"{d}/rekey.log") as f:
        return sum(1 for l in f if "signalled the app" in l)


def all_verified(base, n):
    st = get(base + "/status")
    return len(st) == n and all(c["handoff"] == "verified" for c in st)


def run(rekey, nginx, n, grouped):
    """One fresh host: (start reloads, start s, rotate reloads, rotate s,
    start signals, rotate signals)."""
    d = tempfile.mkdtemp(prefix="rekey-bench-groups-")
    procs = []
    try:
        api, app = free_port(), free_port()
        os.makedirs(f"{d}/placeholder")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", f"{d}/placeholder/key.pem", "-out", f"{d}/placeholder/cert.pem", "-days", "2",
                        "-subj", "/CN=placeholder"], check=True, capture_output=True)
        names = [f"s{i:02d}" for i in range(n)]
        servers, certs = [], []
        for i, name in enumerate(names):
            tls = f"{d}/tls/{name}"
            os.makedirs(tls)
            shutil.copy(f"{d}/placeholder/cert.pem", f"{tls}/fullchain.pem")
            shutil.copy(f"{d}/placeholder/key.pem", f"{tls}/key.pem")
            default = " default_server" if i == 0 else ""
            servers.append(f"server {{ listen 127.0.0.1:{app} ssl{default}; server_name {name}.example.test; "
                           f"ssl_certificate {tls}/fullchain.pem; ssl_certificate_key {tls}/key.pem; location / {{ return 200 \"ok\"; }} }}")
            certs.append(f"""[[certificate]]
name = "{name}"
issuer = "dev"
dns_names = ["{name}.example.test"]
files = {{ cert = "{tls}/cert.pem", key = "{tls}/key.pem", fullchain = "{tls}/fullchain.pem" }}
reload = {{ type = "signal", signal = "HUP", pid_file = "{d}/nginx/nginx.pid" }}
verify = {{ type = "tls", connect = "127.0.0.1:{app}", server_name = "{name}.example.test" }}
""")
        write_nginx_conf(d, servers, connections=512, http_extra="server_names_hash_bucket_size 128; ")
        window = "" if grouped else 'reload_window = "0s"\n'
        with open(f"{d}/rekey.toml", "w") as f:
            f.write(f"""[daemon]
state_dir = "{d}/state"
listen = "127.0.0.1:{api}"
{window}
[issuer.dev]
type = "local-ca"

{chr(10).join(certs)}""")
        procs.append(start_nginx(nginx, d))
        wait("nginx", lambda: socket.create_connection(("127.0.0.1", app), timeout=1), 120)
        base = f"http://127.0.0.1:{api}"
        log = open(f"{d}/rekey.log", "w")
        t0 = time.monotonic()
        procs.append(subprocess.Popen([rekey, "run", "-c", f"{d}/rekey.toml"], stderr=log, stdout=log,
                                      env={**os.environ, "REKEY_LOG": "info,rekey::handoff::reload=debug"}))
        wait("every first handoff verified", lambda: all_verified(base, n), 120)
        start_s, start_reloads, start_signals = time.monotonic() - t0, reloads(d), signals(d)

        sock = f"{d}/state/rekey.sock"
        before, sent, answers = reloads(d), signals(d), [None] * n
        go = threading.Barrier(n + 1)

        def ask(i):
            go.wait()
            answers[i] = post_unix(sock, f"/v1/rotate/{names[i]}")
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        go.wait()
        t0 = time.monotonic()
        for t in threads:
            t.join()
        rotate_s = time.monotonic() - t0
        bad = [(names[i], a) for i, a in enumerate(answers) if a[1].get("result") != "success"]
        if bad or not all_verified(base, n):
            sys.exit(f"bench_groups: rotations failed: {bad[:3]}")
        return start_reloads, start_s, reloads(d) - before, rotate_s, start_signals, signals(d) - sent
    finally:
        stop(procs, d)


def main():
    rekey = os.path.abspath(sys.argv[1]); runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    nginx = nginx_binary()
    if not nginx or not shutil.which("openssl"):
        print("| many certificates of one nginx | skipped: nginx or openssl not installed |"); return
    med = lambda xs: statistics.median(xs)
    for n in SIZES:
        rows = {}
        for grouped in (False, True):
            r = [run(rekey, nginx, n, grouped) for _ in range(runs)]
            rows[grouped] = [med([x[k] for x in r]) for k in range(6)]
        how = {False: 'one reload each (`reload_window = "0s"`, as before handoff groups)', True: "handoff groups (default: 200 ms window, 2 s max wait)"}
        plural = lambda x, what: f"{x:.0f} {what}{'' if x == 1 else 's'}"
        for grouped in (False, True):
            sr, ss, rr, rs, sg, rg = rows[grouped]
            print(f"| {n} certificates of one nginx rotated at once, {how[grouped]} | {plural(rg, 'SIGHUP')}, {plural(rr, 'nginx reload')}, all verified in {rs:.1f} s |")
        for grouped in (False, True):
            sr, ss, rr, rs, sg, rg = rows[grouped]
            print(f"| first start of a fresh host, {n} certificates (nginx on a placeholder), {how[grouped]} | {plural(sg, 'SIGHUP')}, {plural(sr, 'nginx reload')}, all verified in {ss:.1f} s |")


main()
