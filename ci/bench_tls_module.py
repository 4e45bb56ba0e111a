#!/usr/bin/env python3
"""Benchmark: new TLS 1.3 handshakes in the stock Envoy 1.40, Envoy's own TLS against the
module's `tls` transport socket (run with build/venv/bin/python; ci/bench-tls-module.sh builds
the release module and qat-sim and calls this).

ONE Envoy (--concurrency 1, pinned to the last CPU, so /proc/PID/stat is one worker's work plus
the module's threads) runs four listeners with the same RSA 2048 certificate, TLS 1.3 only,
session resumption off, and an HCM whose route answers 200 itself (direct_response: no
upstream, so the figures are TLS and the HTTP request, nothing else):

  (a) envoy     Envoy's own TLS (envoy.transport_sockets.tls)
  (b) boring    the module, key_provider mode boring (BoringSSL in the module signs inline)
  (c) qat-sim   the module, engine, backend qat on qat-sim with a fixed device latency
                (QAT_SIM_LATENCY_US, default 200), software_fallback on
  (d) software  the module, engine, backend software (BoringSSL on the module's threads)

Load: h2load over TLS 1.3, one request per connection. Default (--load close): HTTP/1.1 with
"connection: close" and --clients connections in flight; h2load opens a new connection (new
SSL object) after each response, and with resumption off server-side every one is a FULL
handshake (checked: the handshake counters move by the request count, resumptions by 0).
--load burst: HTTP/2 with as many h2load clients as requests (each client one connection, one
request; a burst). Handshakes/s = requests / h2load's wall time. Envoy CPU = utime+stime of the
whole Envoy process (all threads) over the run, per handshake. qat-sim does the RSA arithmetic
in its own threads inside the Envoy process (a real device would not use host CPU): their CPU
is read per thread (/proc/PID/task, "qat-sim-*") and shown apart, and by default those threads
are moved off Envoy's CPU onto the load CPUs (--sim-cpu front keeps them with Envoy).

Rounds are interleaved (the order rotates); medians are printed, then the ratios with the
issue's targets: (b) >= 0.9 x (a), and (c) on qat-sim >= 0.9 x (b) (handshakes/s). No pass/fail
on timing; exits 1 only if a run has failed requests or the sanity checks fail.

  --module-dir DIR   directory holding the release libenvoy_qat_module.so
  --sim FILE         libqat_sim.so
  --rounds N         interleaved rounds (default 5)
  --requests N       handshakes per run (default 2000)
  --clients N        connections in flight with --load close (default 16)
  --load close|burst
  --latency-us N     qat-sim device latency (default 200)
  --fronts LIST      subset of envoy,boring,qat-sim,software
  --sim-cpu load|front
  --no-pin
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import module_side_by_side as sbs  # noqa: E402
import tls_module_test as tt  # noqa: E402

FRONTS = ["envoy", "boring", "qat-sim", "software"]
LABEL = {"envoy": "(a) Envoy's own TLS", "boring": "(b) module, mode boring",
         "qat-sim": "(c) module, engine on qat-sim", "software": "(d) module, engine software"}
TICK = os.sysconf("SC_CLK_TCK")
PIN = {"front": None, "load": None}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / TICK


def threads(pid, prefix):
    """{tid: cpu seconds} of the live threads whose name starts with prefix."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            if not comm.startswith(prefix):
                continue
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(rest[11]) + int(rest[12])) / TICK
        except OSError:
            continue
    return out


def listener(name, ts, module):
    lst = {"name": name, "stat_prefix": name,
           "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
           "filter_chains": [{"filters": ([tt.wake_filter()] if module else []) + [{
               "name": "envoy.filters.network.http_connection_manager",
               "typed_config": {
                   "@type": sbs.HCM, "stat_prefix": name, "codec_type": "AUTO",
                   "route_config": {"name": name, "virtual_hosts": [{
                       "name": "all", "domains": ["*"],
                       "routes": [{"match": {"prefix": "/"},
                                   "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}]}]},
                   "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": sbs.ROUTER}}],
               }}], "transport_socket": ts}],
           }
    return lst


def ctx(tls):
    c = tt.tls_context(tls, "rsa")
    c["common_tls_context"]["tls_params"] = {"tls_minimum_protocol_version": "TLSv1_3",
                                             "tls_maximum_protocol_version": "TLSv1_3"}
    return c


def front_listener(name, tls):
    if name == "envoy":
        return listener(name, tt.envoy_ts(ctx(tls)), False)
    kp = {"boring": tt.BORING, "qat-sim": tt.ENGINE_QAT, "software": tt.ENGINE_SOFT}[name]
    return listener(name, tt.module_ts(ctx(tls), kp), True)


def counters(env, name):
    """(full handshakes, resumptions) so far: the listener's ssl.* for Envoy's own TLS, the
    module's tls_* otherwise (module-wide: the fronts run one at a time)."""
    spec = tt.Spec(name, name != "envoy", [])
    return tt.handshake_counters(spec, env)


def run_h2load(port, n, clients, load):
    if load == "close":
        cmd = ["h2load", "-n", str(n), "-c", str(clients), "-m", "1", "-t", "1", "--h1", "-H", "connection: close"]
    else:
        cmd = ["h2load", "-n", str(n), "-c", str(n), "-m", "1", "-t", "1"]
    cmd.append(f"https://127.0.0.1:{port}/")
    if PIN["load"]:
        cmd = ["taskset", "-c", PIN["load"]] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    out = p.stdout
    m = tt.H2LOAD_RE.search(out)
    t = re.search(r"finished in ([\d.]+)(ms|s),", out)
    st = re.search(r"status codes: (\d+) 2xx", out)
    if not (p.returncode == 0 and m and t and st) or int(m.group(2)) != n or int(st.group(1)) != n:
        raise RuntimeError(f"h2load: not every request succeeded (exit {p.returncode}): {out[-800:]} {p.stderr[-300:]}")
    secs = float(t.group(1)) / (1000 if t.group(2) == "ms" else 1)
    return secs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module-dir", required=True)
    ap.add_argument("--sim", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--load", choices=["close", "burst"], default="close")
    ap.add_argument("--latency-us", type=int, default=200)
    ap.add_argument("--fronts", default=",".join(FRONTS))
    ap.add_argument("--sim-cpu", choices=["load", "front"], default="load")
    ap.add_argument("--no-pin", action="store_true")
    args = ap.parse_args()
    fronts = [f for f in args.fronts.split(",") if f]
    if any(f not in FRONTS for f in fronts):
        ap.error(f"--fronts: choose from {FRONTS}")
    cpus = sorted(os.sched_getaffinity(0))
    if not args.no_pin and len(cpus) >= 2 and shutil.which("taskset"):
        PIN["front"] = str(cpus[-1])
        PIN["load"] = ",".join(map(str, cpus[:-1]))
    work = tempfile.mkdtemp(prefix="bench-tls-module-")
    env = None
    try:
        tls = os.path.join(work, "tls")
        tt.make_certs(tls)
        cfg = {"admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
               "static_resources": {"listeners": [front_listener(f, tls) for f in fronts]}}
        env = sbs.Envoy(cfg, work, "front", concurrency=1,
                        env=tt.module_env(os.path.abspath(args.module_dir), os.path.abspath(args.sim),
                                          args.latency_us))
        if PIN["front"]:
            os.sched_setaffinity(env.proc.pid, {int(PIN["front"])})
        if not env.wait_ready():
            print("Envoy did not start:\n" + sbs.interesting(env.log_tail(60)), file=sys.stderr)
            return 1
        pid = env.proc.pid
        # Sanity: each front answers over TLS 1.3, and a warm-up run (pools, threads, qat-sim up).
        for f in fronts:
            r = tt.s_client(env.ports[f], ["-tls1_3"], request=False)
            if r["protocol"] != "TLSv1.3":
                print(f"sanity: {f}: no TLS 1.3 handshake: {tt.s_summary(r)}", file=sys.stderr)
                return 1
            run_h2load(env.ports[f], 100, min(args.clients, 100), args.load)
        if PIN["load"] and args.sim_cpu == "load":
            for tid in threads(pid, "qat-sim"):
                os.sched_setaffinity(tid, {int(c) for c in PIN["load"].split(",")})
        ver = subprocess.run([sbs.ENVOY, "--version"], capture_output=True, text=True).stdout.split("version:")[-1]
        print(f"# {os.cpu_count()} cores; Envoy {ver.strip()}; RSA 2048, TLS 1.3 only, resumption off")
        how = (f"h2load --h1 -H 'connection: close' -c {args.clients} -m 1 -n {args.requests} (a new connection and "
               f"a full handshake per request)" if args.load == "close" else
               f"h2load (h2) -c {args.requests} -n {args.requests} -m 1 (one connection per client, a burst)")
        print(f"# load: {how}; {args.rounds} rounds, interleaved, medians")
        print(f"# Envoy --concurrency 1; qat-sim: 2 instances, latency {args.latency_us} us, its threads on "
              f"{'the load CPUs' if args.sim_cpu == 'load' and PIN['load'] else 'Envoy CPU'}")
        print(f"# pinned: Envoy on CPU {PIN['front']}, h2load on CPU {PIN['load']}" if PIN["front"] else "# not pinned")
        res = {f: [] for f in fronts}
        n = args.requests
        for r in range(args.rounds):
            order = fronts[r % len(fronts):] + fronts[:r % len(fronts)]
            for f in order:
                port = env.ports[f]
                hs0, re0 = counters(env, f)
                c0, s0 = cpu_seconds(pid), threads(pid, "qat-sim")
                secs = run_h2load(port, n, args.clients, args.load)
                c1, s1 = cpu_seconds(pid), threads(pid, "qat-sim")
                hs1, re1 = counters(env, f)
                if hs1 - hs0 < n or re1 != re0:
                    raise RuntimeError(f"{f}: {hs1 - hs0} full handshakes and {re1 - re0} resumptions for {n} requests")
                sim = sum(s1.get(t, 0) - v for t, v in s0.items())
                res[f].append({"hs": n / secs, "cpu": (c1 - c0) / n, "sim": sim / n})
            print(f"# round {r + 1}/{args.rounds}: " + ", ".join(f"{f} {res[f][-1]['hs']:.0f}/s" for f in fronts),
                  flush=True)
        med = {f: {k: statistics.median(x[k] for x in res[f]) for k in res[f][0]} for f in fronts}
        print()
        hdr = f"{'front':32} {'handshakes/s':>13} {'Envoy CPU ms/hs':>16} {'of it qat-sim':>14} {'range hs/s':>16}"
        print(hdr)
        print("-" * len(hdr))
        for f in fronts:
            m = med[f]
            lo, hi = min(x["hs"] for x in res[f]), max(x["hs"] for x in res[f])
            print(f"{LABEL[f]:32} {m['hs']:13.0f} {1000 * m['cpu']:16.3f} {1000 * m['sim']:14.3f} "
                  f"{f'{lo:.0f}-{hi:.0f}':>16}")
        print()

        def ratio(x, y, target=None):
            if x not in med or y not in med:
                return
            hs = med[x]["hs"] / med[y]["hs"]
            per = sorted(a["hs"] / b["hs"] for a, b in zip(res[x], res[y]))
            cpu = med[x]["cpu"] / med[y]["cpu"]
            cpu_net = (med[x]["cpu"] - med[x]["sim"]) / (med[y]["cpu"] - med[y]["sim"])
            t = ""
            if target:
                t = f"  target >= {target}: {'met' if hs >= target else 'NOT met'}"
            print(f"  {x} / {y}: handshakes/s {hs:.3f} [per round {per[0]:.3f}-{per[-1]:.3f}], "
                  f"Envoy CPU per handshake {cpu:.3f} (without qat-sim's threads {cpu_net:.3f}){t}")
        print("Ratios (medians; [range] = the same ratio within each round):")
        ratio("boring", "envoy", 0.9)
        ratio("qat-sim", "boring", 0.9)
        ratio("software", "boring")
        with open(os.path.join(work, "results.json"), "w") as f:
            json.dump(res, f)
        return 0
    finally:
        if env:
            env.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
