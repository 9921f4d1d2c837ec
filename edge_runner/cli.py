"""`edge-runner` command line (argparse only: boards have no click).

  edge-runner bench MODEL.tflite [MODEL.tflite ...] [--threads N --warmup N --min-runs N --min-seconds S
                                   --max-seconds S --cooldown S --repeats N --backend B
                                   --no-xnnpack --golden GOLDEN.npz --json]
  edge-runner verify MODEL.tflite GOLDEN.npz [--atol X --output-atol NAME=X --mode M --threads N
                                              --backend B --json]
  edge-runner info [--backend B --json]

Exit codes: 0 ok, 1 verification failed, 2 user error (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from edge_runner import __version__
from edge_runner.errors import RunnerError

PROG = "edge-runner"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def _number(kind, minimum, what: str):
    """An argparse type: `kind(text)` >= `minimum` and finite, else a one-line usage error."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value >= minimum or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected {what} >= {minimum}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, 1, "an integer")
_non_negative_int = _number(int, 0, "an integer")
_seconds = _number(float, 0, "seconds")
_non_negative_float = _number(float, 0, "a number")


def _named_atol(text: str) -> tuple:
    """NAME=X for --output-atol."""
    name, sep, value = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=X (an output name and a number), "
                                         f"got {text!r}")
    return name, _non_negative_float(value)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Run, verify and time a .tflite model on this machine.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    bench = sub.add_parser("bench", help="time a model (warm-up, min runs/seconds, percentiles)")
    bench.add_argument("model", metavar="MODEL", nargs="+",
                       help=".tflite file(s); several: timed one after another in one process, "
                       "--json prints {\"results\": [one result per model]}")
    bench.add_argument("--threads", type=_positive_int, default=1)
    bench.add_argument("--warmup", type=_non_negative_int, default=10, help="warm-up runs")
    bench.add_argument("--min-runs", type=_positive_int, default=50)
    bench.add_argument("--min-seconds", type=_seconds, default=1.0)
    bench.add_argument("--max-seconds", type=_seconds, default=None,
                       help="cap on each repeat's timed loop")
    bench.add_argument("--cooldown", type=_seconds, default=0.0, help="sleep between repeats")
    bench.add_argument("--repeats", type=_positive_int, default=1)
    bench.add_argument("--backend", default=None, help="litert | tflite-runtime | tensorflow")
    bench.add_argument("--no-xnnpack", action="store_true", help="disable the XNNPACK delegate")
    bench.add_argument("--seed", type=int, default=0, help="seed of the random input")
    bench.add_argument("--golden", default=None, metavar="GOLDEN",
                       help="time the golden .npz's first inputs instead of random ones")
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")

    verify = sub.add_parser("verify", help="compare outputs with golden outputs (exit 1 on fail)")
    verify.add_argument("model", metavar="MODEL", help=".tflite file")
    verify.add_argument("golden", metavar="GOLDEN",
                        help=".npz with inputs, outputs (or inputs__NAME, outputs__NAME)")
    verify.add_argument("--atol", type=_non_negative_float, default=None,
                        help="max abs difference allowed on every output (default: per output, "
                             "from its dtype and the quantization mode)")
    verify.add_argument("--output-atol", type=_named_atol, action="append", default=[],
                        metavar="NAME=X", help="max abs difference for one output (repeatable)")
    verify.add_argument("--mode", default=None,
                        help="fp32 | float16 | dynamic | int8 | int16x8 (default: from golden)")
    verify.add_argument("--threads", type=_positive_int, default=1)
    verify.add_argument("--backend", default=None)
    verify.add_argument("--no-xnnpack", action="store_true")
    verify.add_argument("--json", action="store_true")

    info = sub.add_parser("info", help="CPU, frequency, governor, temperature, runtime")
    info.add_argument("--backend", default=None)
    info.add_argument("--json", action="store_true")
    return parser


def _fmt(value, spec: str = ".3f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def _ms(value: float) -> str:
    """Milliseconds with 4 significant digits (sub-millisecond models stay readable)."""
    return f"{value:.3f}" if value >= 10 else f"{value:.4g}"


def _system_lines(s: dict) -> list:
    freq = s.get("cpufreq") or {}
    thr = s.get("throttling")
    throttled = "n/a" if thr is None else (
        "no" if not (thr["any_now"] or thr["any_occurred"])
        else ",".join(k for k, v in thr["flags"].items() if v) + f" ({thr['raw']})")
    cores = s.get("cores") or {}
    return [
        f"cpu          {s.get('cpu_model') or 'n/a'}" + (f" [{s['board']}]" if s.get("board")
                                                          else ""),
        *([f"emulated     yes: {'; '.join(s['emulated']['evidence'])}; timings here are the "
           "emulator's, not a board's"] if s.get("emulated") else []),
        f"cores        {cores.get('logical')} (usable {cores.get('usable')})",
        f"governor     {freq.get('governor') or 'n/a'}",
        f"frequency    {_fmt(freq.get('cur_mhz'), '.0f', ' MHz')} "
        f"(min {_fmt(freq.get('min_mhz'), '.0f')}, max {_fmt(freq.get('max_mhz'), '.0f')})",
        f"temperature  {_fmt(s.get('temperature_c'), '.1f', ' C')}",
        f"throttled    {throttled}",
        f"load         {s.get('loadavg')}",
    ]


def _io_lines(io: dict) -> list:
    def one(t: dict) -> str:
        return f"{t['name']} {t['dtype']}{t['shape']}"

    return [f"{kind:<13}{', '.join(one(t) for t in io[kind])}" for kind in ("inputs", "outputs")]


def _print_bench(r: dict) -> None:
    lat = r["latency_ms"]
    m = r["model"]
    lines = [
        f"model        {m['path']} ({m['size_bytes']} bytes, sha256 {m['sha256'][:12]})",
        f"runtime      {r['backend']} {r['backend_version']}, threads {r['threads']}, "
        f"xnnpack {'on' if r['xnnpack'] else 'off'}, python {r['python']}",
        f"runs         {r['runs']} timed ({r['repeats']} repeat(s)), {r['warmup']} warm-up",
        f"init         {r['init_ms']:.2f} ms   first inference {r['first_inference_ms']:.3f} ms",
        *_io_lines(r["io"]),
        "input data   " + ("random (seed {})".format(r["inputs"]["seed"])
                           if r["inputs"]["from"] == "random" else r["inputs"]["from"]),
        f"latency ms   mean {_ms(lat['mean'])}  std {_ms(lat['std'])}  cv {100 * lat['cv']:.1f}%"
        f"  robust cv {100 * lat['robust_cv']:.1f}%",
        "             " + "  ".join(f"{k} {_ms(lat[k])}" for k in ("min", "p50", "p90", "p99", "max")),
    ]
    if r["repeats"] > 1:
        lines.append(f"p50 spread   {100 * r['p50_spread']:.1f}% across repeats")
    lines.append(f"peak RSS     {r['peak_rss_kb']} KB")
    lines += _system_lines(r["system_after"])
    lines += [f"warning      {w}" for w in r["warnings"]]
    print("\n".join(lines))


def _diffs(r: dict) -> str:
    agree = "n/a" if r["argmax_agreement"] is None else f"{r['argmax_agreement']:.4f}"
    return (f"max abs diff {_fmt(r['max_abs_diff'], '.3g')} (tolerance {r['tolerance']:.3g}), "
            f"mean abs diff {_fmt(r['mean_abs_diff'], '.3g')}, argmax agreement {agree}")


def _print_verify(r: dict) -> None:
    verdict = "PASS" if r["passed"] else "FAIL"
    outputs = r["outputs"]
    lines = [f"{verdict}  {r['model']} vs {r['golden']}",
             f"mode {r['mode']}, n {r['n']}" + (f", {_diffs(r)}" if len(outputs) == 1 else "")]
    if len(outputs) > 1:
        lines += [f"  {name}: {'ok  ' if o['passed'] else 'FAIL'} {_diffs(o)}"
                  for name, o in outputs.items()]
    lines.append(f"runtime {r['backend']} {r['backend_version']}, threads {r['threads']}")
    print("\n".join(lines))
    for reason in r["reasons"]:
        print(f"  - {reason}")


def _run(args) -> int:
    if args.command == "bench":
        from edge_runner.bench import benchmark

        results = [benchmark(m, threads=args.threads, warmup=args.warmup,
                             min_runs=args.min_runs, min_seconds=args.min_seconds,
                             max_seconds=args.max_seconds, cooldown_s=args.cooldown,
                             repeats=args.repeats, backend=args.backend,
                             xnnpack=not args.no_xnnpack, seed=args.seed, golden=args.golden)
                   for m in args.model]
        if args.json:
            print(json.dumps(results[0] if len(results) == 1 else {"results": results}, indent=2, allow_nan=False))
        else:
            for i, result in enumerate(results):
                if i:
                    print()
                _print_bench(result)
        return 0
    if args.command == "verify":
        from edge_runner.verify import verify

        result = verify(args.model, args.golden, atol=args.atol,
                        output_atol=dict(args.output_atol) or None, mode=args.mode,
                        threads=args.threads, backend=args.backend, xnnpack=not args.no_xnnpack)
        if args.json:
            print(json.dumps(result, indent=2, allow_nan=False))
        else:
            _print_verify(result)
        return 0 if result["passed"] else 1
    # info
    from edge_runner import backends, sysinfo

    try:
        impl = backends.resolve(args.backend)
        runtime = {"backend": impl.name, "version": impl.version}
    except RunnerError:
        if args.backend is not None:
            raise
        runtime = None  # no interpreter here: still describe the machine
    result = sysinfo.collect(runtime=runtime)
    result["backends_found"] = backends.available()
    result["edge_runner"] = __version__
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        found = ", ".join(k for k, v in result["backends_found"].items() if v) or "none"
        active = f"{runtime['backend']} {runtime['version']}" if runtime else "none"
        print(f"runtime      {active} (found: {found})")
        print(f"python       {result['python']} on {result['platform']}")
        print("\n".join(_system_lines(result)))
    return 0


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except RunnerError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `edge-runner bench ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
