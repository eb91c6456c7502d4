"""What the nginx benchmarks (bench_handoff.py, bench_groups.py) share: a
real nginx (Debian nginx-light) in a temp dir on a loopback port, the
daemon's /status, polling with a deadline, and stopping what they started.
"""
import json, os, shutil, socket, subprocess, sys, time, urllib.request


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def wait(what, pred, timeout=30):
    """Poll pred until it returns something true; on timeout exit naming the benchmark and `what`."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            v = pred()
            if v:
                return v
        except Exception:
            pass
        time.sleep(0.02)
    who = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    sys.exit(f"{who}: timed out waiting for {what}")


def nginx_binary():
    """The nginx to run, or None when it is not installed (the benchmark then says it skipped)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    return nginx if os.path.exists(nginx) else None


def write_nginx_conf(d, servers, connections=64, http_extra=""):
    """nginx.conf under d/nginx for the given `server { }` blocks: its pid
    file (what rekey signals), an error log at info (its `reconfiguring`
    notices count reloads) and every temp path inside d."""
    for sub in ("nginx/tmp", "nginx/logs"):
        os.makedirs(f"{d}/{sub}", exist_ok=True)
    with open(f"{d}/nginx/nginx.conf", "w") as f:
        f.write(f"""daemon off; master_process on; worker_processes 2; pid {d}/nginx/nginx.pid;
error_log {d}/nginx/logs/error.log info;
events {{ worker_connections {connections}; }}
http {{ access_log off; {http_extra}client_body_temp_path {d}/nginx/tmp/b; proxy_temp_path {d}/nginx/tmp/p;
fastcgi_temp_path {d}/nginx/tmp/f; uwsgi_temp_path {d}/nginx/tmp/u; scgi_temp_path {d}/nginx/tmp/s;
{chr(10).join(servers)}
}}
""")


def start_nginx(nginx, d):
    """Run nginx on the config write_nginx_conf wrote (in the foreground, for stop())."""
    return subprocess.Popen([nginx, "-p", f"{d}/nginx", "-c", f"{d}/nginx/nginx.conf", "-e", f"{d}/nginx/logs/error.log"],
                            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def reloads(d):
    """How many times the nginx under d reloaded: its master's `reconfiguring` notices."""
    with open(f"{d}/nginx/logs/error.log") as f:
        return sum(1 for l in f if l.rstrip().endswith(": reconfiguring"))


def stop(procs, d, timeout=10):
    """SIGTERM every process (last started first), kill those that outlive `timeout`, remove d."""
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except Exception:
            p.kill()
    shutil.rmtree(d, ignore_errors=True)
