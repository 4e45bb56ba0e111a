#!/usr/bin/env python3
"""Benchmark: envoy-qat's Envoy dynamic module against Envoy's built-in gzip compressor, in the
stock Envoy 1.40 (run with build/venv/bin/python; ci/bench-module.sh builds the release module
and calls this).

One run starts, on 127.0.0.1 only:
  upstream   a stock Envoy serving slices of the web corpus from memory (direct_response bodies
             read from files at start-up): every kind (html css js json svg txt xml), at about
             1 KiB, 32 KiB and 1 MiB, 4 different slices each, with the kind's content type;
  fronts     one stock Envoy each (--concurrency 1, so /proc/PID/stat CPU is one front's own),
             all proxying to the upstream over HTTP/2 with the same compressor parameters
             (level 6, memory_level 5, window_bits 12, chunk_size 4096, Envoy's defaults):
               builtin          envoy.filters.http.compressor + envoy.compression.gzip.compressor
               module           the module's compressor, filter_config {} (backend auto)
               module-software  the module's compressor, {"backend": "software"} (zlib-rs inline)
               module-software-async  the same with every chunk on the module's threads
                                (software_async_min_bytes 1): what the hand-off costs
               none             no compressor: Envoy's own proxying cost, subtracted for "net"
and loads each front in turn with h2load (fixed request count, accept-encoding: gzip, HTTP/2
cleartext), rounds interleaved. Per front and size it reports requests/s, the front's CPU
(utime+stime of the whole process, module threads included) per MB of response body that went
through it uncompressed, the same net of the "none" front, output/input size, and the module's
figures relative to the built-in's (CPU efficiency = built-in CPU / module CPU, so > 1 is
better; size = module bytes / built-in bytes). Medians over the rounds. Prints figures; no
pass/fail (a front that fails its sanity check, or an h2load run with failed requests, exits 1).

  --module-dir DIR   directory holding the release libenvoy_qat_module.so
  --corpus DIR       ci/web-corpus.sh's output directory
  --rounds N         interleaved rounds (default 5)
  --scale X          multiply the request counts (default 1)
  --fronts LIST      comma-separated subset of builtin,module,module-software,none
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

KINDS = {"html": "text/html", "css": "text/css", "js": "application/javascript", "json": "application/json",
         "svg": "image/svg+xml", "txt": "text/plain", "xml": "text/xml"}
SIZES = [("1 KiB", 1024, 20000), ("32 KiB", 32 << 10, 4000), ("1 MiB", 1 << 20, 160)]
SLICES = 4
FRONTS = ["builtin", "module", "module-software", "module-software-async", "none"]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 (utime, stime) are rest[11] and rest[12] after "pid (comm)".
    return (int(rest[11]) + int(rest[12])) / TICK


def upstream_bootstrap(work, corpus):
    routes = []
    bodies = {}
    for label, size, _ in SIZES:
        for kind, ctype in KINDS.items():
            with open(os.path.join(corpus, kind), "rb") as f:
                data = f.read()
            # Kinds smaller than the size are tiled (a repeat further back than the 4 KiB window
            # of window_bits 12 changes nothing for deflate), so every body is exactly `size`.
            data = data * (1 + (size * (SLICES + 1)) // len(data))
            for i in range(SLICES):
                off = i * size
                body = data[off:off + size]
                path = f"/{size}/{kind}/{i}"
                fname = os.path.join(work, f"body-{size}-{kind}-{i}")
                with open(fname, "wb") as f:
                    f.write(body)
                bodies[path] = body
                routes.append({
                    "match": {"path": path},
                    "direct_response": {"status": 200, "body": {"filename": fname}},
                    "response_headers_to_add": [{"header": {"key": "content-type", "value": ctype},
                                                 "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
                })
    lst = {
        "name": "upstream",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": sbs.HCM, "stat_prefix": "upstream", "codec_type": "AUTO",
                "route_config": {"name": "bodies", "max_direct_response_body_size_bytes": 2 << 20,
                                 "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": sbs.ROUTER}}],
            },
        }]}],
    }
    return sbs.bootstrap([lst], []), bodies


def front_bootstrap(kind, upstream_port):
    if kind == "builtin":
        filters = [sbs.builtin_compressor({})]
    elif kind == "module":
        filters = [sbs.module_filter("envoy_qat.compressor", "compressor", {})]
    elif kind == "module-software":
        filters = [sbs.module_filter("envoy_qat.compressor", "compressor", {"backend": "software"})]
    elif kind == "module-software-async":
        filters = [sbs.module_filter("envoy_qat.compressor", "compressor",
                                     {"backend": "software", "software_async_min_bytes": 1})]
    else:
        filters = []
    lst = sbs.listener("front", filters, side=kind)
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    del hcm["route_config"]["virtual_hosts"][0]["request_headers_to_add"]
    cl = sbs.cluster(upstream_port)
    cl["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "explicit_http_config"] = {"http2_protocol_options": {}}
    return sbs.bootstrap([lst], [cl])


PIN = {"front": None, "load": None}  # taskset CPU lists (--pin)


def pinned(cmd, which):
    return (["taskset", "-c", PIN[which]] + cmd) if PIN[which] else cmd


def pin_process(pid, which):
    """Pin a just-started process (its threads so far, and every thread it starts later)."""
    if PIN[which]:
        os.sched_setaffinity(pid, {int(c) for c in PIN[which].split(",")})


def h2load(port, paths, n):
    cmd = pinned(["h2load", "-n", str(n), "-c", "4", "-m", "8", "-t", "1", "-H", "accept-encoding: gzip"] + [
        f"http://127.0.0.1:{port}{p}" for p in paths], "load")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    out = p.stdout
    m_rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    m_req = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                      out)
    m_st = re.search(r"status codes: (\d+) 2xx", out)
    m_data = re.search(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?\((\d+)\) data", out)
    if not (p.returncode == 0 and m_rps and m_req and m_data and m_st):
        raise RuntimeError(f"h2load failed (exit {p.returncode}): {out[-800:]} {p.stderr[-400:]}")
    if int(m_req.group(2)) != n or int(m_st.group(1)) != n:
        raise RuntimeError(f"h2load: not every request succeeded with 2xx: {out[-800:]}")
    return float(m_rps.group(1)), int(m_data.group(3))


def sanity(fronts, paths_by_size, bodies):
    """Every front returns every body; the compressing fronts gzip it and it decodes."""
    for name, env in fronts.items():
        port = env.ports["front"]
        for label, paths in paths_by_size.items():
            for path in paths[::3]:
                res = sbs.h1_request(port, "GET", path, [("accept-encoding", "gzip")])
                gz_ = res.headers.get("content-encoding") == "gzip"
                body = sbs.decode(res.body)[0] if gz_ else res.body
                if res.status != 200 or not res.complete or body != bodies[path] or gz_ != (name != "none"):
                    raise RuntimeError(f"sanity: front {name} {path}: status {res.status} complete {res.complete} "
                                       f"content-encoding {res.headers.get('content-encoding')} "
                                       f"body {len(body)} B vs {len(bodies[path])} B")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--module-dir", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--fronts", default=",".join(FRONTS))
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin (by default, with 2+ CPUs and taskset, the front Envoys run on the last "
                         "CPU and the upstream Envoy and h2load on the others)")
    args = ap.parse_args()
    ncpu = len(os.sched_getaffinity(0))
    if not args.no_pin and ncpu >= 2 and shutil.which("taskset"):
        cpus = sorted(os.sched_getaffinity(0))
        PIN["front"] = str(cpus[-1])
        PIN["load"] = ",".join(map(str, cpus[:-1]))
    fronts_wanted = [f for f in args.fronts.split(",") if f]
    if any(f not in FRONTS for f in fronts_wanted):
        ap.error(f"--fronts: choose from {FRONTS}")
    module_dir = os.path.abspath(args.module_dir)
    work = tempfile.mkdtemp(prefix="bench-module-")
    envs = []
    try:
        ucfg, bodies = upstream_bootstrap(work, args.corpus)
        up = sbs.Envoy(ucfg, work, "upstream", concurrency=1)
        envs.append(up)
        pin_process(up.proc.pid, "load")
        if not up.wait_ready():
            print("upstream Envoy did not start:\n" + up.log_tail(), file=sys.stderr)
            return 1
        uport = up.ports["upstream"]
        fronts = {}
        for name in fronts_wanted:
            e = sbs.Envoy(front_bootstrap(name, uport), work, f"front-{name}", concurrency=1,
                          env=dict(os.environ, ENVOY_DYNAMIC_MODULES_SEARCH_PATH=module_dir))
            envs.append(e)
            pin_process(e.proc.pid, "front")
            if not e.wait_ready():
                print(f"front {name} did not start:\n" + e.log_tail(), file=sys.stderr)
                return 1
            fronts[name] = e
        paths_by_size = {label: [f"/{size}/{k}/{i}" for k in KINDS for i in range(SLICES)]
                         for label, size, _ in SIZES}
        sanity(fronts, paths_by_size, bodies)
        print(f"# {os.cpu_count()} cores; Envoy {subprocess.run([sbs.ENVOY, '--version'], capture_output=True, text=True).stdout.split('version:')[-1].strip()}")
        print(f"# fronts --concurrency 1, upstream --concurrency 1, h2load -c 4 -m 8 -t 1; {args.rounds} rounds, "
              f"medians; corpus {args.corpus}")
        print(f"# pinned: fronts on CPU {PIN['front']}, upstream and h2load on CPU {PIN['load']}" if PIN["front"]
              else "# not pinned")
        res = {}  # (front, size label) -> list of dicts
        for r in range(args.rounds):
            t_round = time.monotonic()
            for label, size, n in SIZES:
                n = max(50, int(n * args.scale))
                paths = paths_by_size[label]
                in_bytes = sum(len(bodies[paths[i % len(paths)]]) for i in range(n))
                order = fronts_wanted[r % len(fronts_wanted):] + fronts_wanted[:r % len(fronts_wanted)]
                for name in order:
                    env = fronts[name]
                    c0, u0, t0 = cpu_seconds(env.proc.pid), cpu_seconds(up.proc.pid), time.monotonic()
                    rps, data = h2load(env.ports["front"], paths, n)
                    c1, u1, t1 = cpu_seconds(env.proc.pid), cpu_seconds(up.proc.pid), time.monotonic()
                    res.setdefault((name, label), []).append(
                        {"rps": rps, "cpu": c1 - c0, "ucpu": u1 - u0, "out": data, "in": in_bytes,
                         "wall": t1 - t0})
            print(f"# round {r + 1}/{args.rounds} done in {time.monotonic() - t_round:.0f} s", flush=True)
        med = {}
        for key, runs in res.items():
            med[key] = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
        print()
        hdr = (f"{'size':7} {'front':16} {'req/s':>9} {'CPU ms/MB':>10} {'net ms/MB':>10} {'out/in':>7} "
               f"{'size vs builtin':>16} {'CPU eff vs builtin':>19} {'net eff':>8} {'upstream CPU':>13}")
        print(hdr)
        print("-" * len(hdr))
        summary = []
        for label, _, _ in SIZES:
            b = med.get(("builtin", label))
            none = med.get(("none", label))
            for name in fronts_wanted:
                m = med[(name, label)]
                mb = m["in"] / 1e6
                per = 1000 * m["cpu"] / mb
                net = 1000 * (m["cpu"] - none["cpu"]) / mb if none and name != "none" else float("nan")
                size_vs = m["out"] / b["out"] if b else float("nan")
                eff = (b["cpu"] / m["cpu"]) if b else float("nan")
                neff = ((b["cpu"] - none["cpu"]) / (m["cpu"] - none["cpu"])) if (b and none and name != "none"
                                                                                    and m["cpu"] > none["cpu"]) else float("nan")
                ucpu_pct = 100 * m["ucpu"] / m["wall"]
                print(f"{label:7} {name:16} {m['rps']:9.0f} {per:10.2f} {net:10.2f} {m['out'] / m['in']:7.4f} "
                      f"{size_vs:16.4f} {eff:19.3f} {neff:8.3f} {ucpu_pct:12.0f}%")
                if name.startswith("module") and b:
                    summary.append((label, name, eff, neff, size_vs))
            print()
        print("Module relative to the built-in (target: CPU efficiency >= 1.0 at every size, size <= 1.01);")
        print("[range] = the same ratio per round (each round measures both fronts back to back):")
        for label, name, eff, neff, size_vs in summary:
            per_round = sorted(b["cpu"] / m["cpu"] for b, m in zip(res[("builtin", label)], res[(name, label)])
                               if m["cpu"] > 0)
            rng = f"[{per_round[0]:.3f}-{per_round[-1]:.3f}]" if per_round else ""
            print(f"  {label:7} {name:16} CPU efficiency {eff:.3f} {rng} (net of proxying {neff:.3f}), "
                  f"size {size_vs:.4f}")
        with open(os.path.join(work, "results.json"), "w") as f:
            json.dump({f"{k[0]}|{k[1]}": v for k, v in med.items()}, f)
        return 0
    finally:
        for e in envs:
            e.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
