"""The ``ovquant`` command line.

    ovquant plugins                       list every registered algorithm, estimator, aggregator, target
    ovquant quantize -c config.json       POT-style config file
    ovquant quantize -m model.xml --data PATH [--preset mixed] [--subset-size 300] [--target CPU] -o OUTDIR
    ovquant inspect model.xml             list the quantizers of an IR
    ovquant demo                          quantize the example model shipped in the package
    ovquant cache info | clear            where the statistics cache is and how big; empty it
    ovquant convert-target POT.json -o OUT.json   a POT hardware-config file as an ovquant target

Bad input is reported as one line on stderr with exit code 2; a quantized model that fails the output
check (does not compile or run, non-finite, far from FP32) is not written and exits with 1; Ctrl-C
exits with 130, SIGTERM and SIGHUP with 143.
"""
import argparse
import os
import signal
import sys
import threading
import warnings

from .errors import OVQuantError, QuantizationFailed

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class _Terminated(BaseException):
    """SIGTERM/SIGHUP, raised in the main thread so that the run cleans up as for Ctrl-C."""


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _cmd_plugins(args) -> int:
    from .registry import KINDS, get_registry

    reg = get_registry()
    titles = {"algorithms": "Algorithms", "estimators": "Range estimators", "statistics": "Statistics for algorithms",
              "aggregators": "Aggregators", "hw_targets": "Hardware targets", "placement_rules": "Placement rules"}
    for kind in titles:
        print(f"{titles[kind]}:")
        source = "estimators" if kind == "statistics" else kind
        entries = sorted(reg.entries[source].values(), key=lambda e: e.name.lower())
        if source == "estimators":
            entries = [e for e in entries if getattr(e.obj, "range_estimator", True) == (kind == "estimators")]
        seen = set()
        for e in entries:
            if kind == "hw_targets":
                if id(e.obj) in seen:
                    continue
                seen.add(id(e.obj))
                aliases = f" (aliases: {', '.join(e.obj.aliases)})" if e.obj.aliases else ""
                print(f"  {e.obj.name:<28} {e.package:<32} {e.plugin}{aliases}")
                if e.obj.description:
                    print(f"      {e.obj.description}")
            else:
                print(f"  {e.name:<28} {e.package:<32} {e.plugin}")
        if not entries:
            print("  (none)")
    assert set(KINDS) == set(titles) - {"statistics"}
    return 0


def _image_options(args):
    from .dataset import ImageOptions, parse_layout, parse_values

    return ImageOptions(layout=parse_layout(args.layout, "--layout"),
                        mean_values=parse_values(args.mean_values, "--mean-values"),
                        scale_values=parse_values(args.scale_values, "--scale-values"),
                        reverse_input_channels=args.reverse_input_channels)


def _nonempty(value: str, flag: str) -> str:
    if value is not None and (not value.strip() or any(c in value for c in "\n\r\x00")):
        raise OVQuantError(f"{flag}: must be a non-empty single-line value, got {value[:40]!r}")
    return value


def _cmd_quantize(args) -> int:
    from . import api

    for flag, value in (("-o/--output-dir", args.output_dir), ("--target", args.target), ("-m/--model", args.model),
                        ("--data", args.data), ("-c/--config", args.config), ("-n/--name", args.name)):
        _nonempty(value, flag)
    image_flags = any(v not in (None, False) for v in (args.layout, args.mean_values, args.scale_values,
                                                        args.reverse_input_channels))
    if args.config and (args.model or args.preset or args.data or image_flags or args.ignored_scope):
        raise OVQuantError("-c/--config cannot be combined with -m/--model, --data, --preset, image options or "
                           "--ignored-scope (as in POT: put them in the config)")
    if args.name:   # before quantizing: the name is checked again where the files are written
        from .config import output_name_problem

        problem = output_name_problem(args.name)
        if problem:
            raise OVQuantError(f"-n/--name: {problem}, got {args.name!r}")
    common = dict(use_cache=not args.no_cache, strict=args.strict, progress=not args.no_progress, force=args.force,
                  overwrite=args.overwrite, **({} if args.skip_slow_int8 is None else {"skip_slow_int8": args.skip_slow_int8}))
    if args.report_html:
        common["report_html"] = True
    if args.max_output_error is not None:
        if not args.max_output_error > 0:
            raise OVQuantError(f"--max-output-error: must be a number > 0, got {args.max_output_error:g}")
        common["max_output_error"] = args.max_output_error
    if args.config:
        result = api.quantize_from_config(args.config, output_dir=args.output_dir, **common)
    else:
        if not args.model:
            raise OVQuantError("give -c/--config, or -m/--model with --data")
        if not args.data:
            raise OVQuantError("--data is required with -m/--model (a folder of images, an .npy or an .npz)")
        ignored = None
        if args.ignored_scope or args.ignored_type:
            ignored = {"scope": list(args.ignored_scope or []),
                       "operations": [{"type": t} for t in args.ignored_type or []]}
        result = api.quantize_from_args(model=args.model, weights=args.weights, data=args.data,
                                        preset=args.preset or "performance", subset_size=args.subset_size,
                                        target_device=args.target, model_type=args.model_type,
                                        output_dir=args.output_dir or "results", name=args.name,
                                        image=_image_options(args), ignored=ignored, **common)
    for line in result.get("summary", []):
        print(line)
    print(f"saved {result['xml']}")
    return 0


def _cmd_inspect(args) -> int:
    from .inspect import describe_quantizers

    for line in describe_quantizers(args.model):
        print(line)
    return 0


def _cmd_cache(args) -> int:
    from . import cache

    root = cache.default_root(warn=False)
    if root is None:
        raise OVQuantError("statistics cache: no location (HOME is not set; set OVQUANT_CACHE_DIR)")
    if args.action == "clear":
        n, size = cache.clear(root)
        print(f"removed {n} statistics cache entries ({cache.format_size(size)}) from {root}")
    else:
        info = cache.info(root)
        print(f"location: {root}")
        print(f"entries:  {info['entries']} ({cache.format_size(info['bytes'])})")
        print(f"limit:    {cache.format_size(info['limit'])} (OVQUANT_CACHE_MAX_SIZE; oldest entries go first)")
    return 0


def _cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(output_dir=_nonempty(args.output_dir, "-o/--output-dir"))
    return 0


def _cmd_convert_target(args) -> int:
    import json

    from .hwtarget import load_target
    from .pot_target import PotFormatError, convert_pot_target_file

    try:
        target = convert_pot_target_file(args.pot_file, name=args.name, device=args.device)
    except PotFormatError as exc:
        raise OVQuantError(str(exc)) from None
    text = json.dumps(target, indent=2) + "\n"
    try:
        load_target(target)   # the result must load as it is written
    except ValueError as exc:
        raise OVQuantError(f"{args.pot_file}: the converted target does not validate: {exc}") from None
    out = args.output
    if os.path.abspath(out) == os.path.abspath(args.pot_file):
        raise OVQuantError(f"-o/--output: {out} is the input file")
    if os.path.exists(out) and not args.force:
        raise OVQuantError(f"-o/--output: {out} exists (give --force to replace it)")
    tmp = f"{out}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OVQuantError(f"-o/--output: cannot write {out}: {exc.strerror or exc}") from None
    print(f"wrote {out} (target {target['name']}: {len(target['operations'])} op types)")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one ``ovquant: error:`` line and exit code 2."""

    def error(self, message):
        raise OVQuantError(f"{self.prog.split(' ', 1)[-1] if ' ' in self.prog else 'usage'}: {message.splitlines()[0]}"
                           f" (see '{self.prog} --help')")


def _add_quantize_parser(sub) -> None:
    q = sub.add_parser("quantize", help="quantize a model (POT config file, or command-line options)",
                       description="Quantize a model to INT8. Either a POT-style JSON config (-c) names the "
                                   "model, the data and the algorithms, or -m/--data and the options below do. "
                                   "The output is compiled and run on a few samples before it is written.")
    q.add_argument("-c", "--config", help="POT-style JSON config (comments allowed)")
    q.add_argument("-m", "--model", help="model: OpenVINO IR .xml, or .onnx, .tflite, .pdmodel, .pb")
    q.add_argument("-w", "--weights", help="model .bin (default: next to the .xml)")
    q.add_argument("--data", help="calibration data: a folder of images (class subfolders too), an .npy or an .npz")
    q.add_argument("--preset", choices=["performance", "mixed", "accuracy"], help="default: performance")
    q.add_argument("--subset-size", type=int, default=300, help="stat_subset_size: calibration samples (default: 300)")
    q.add_argument("--target", "--target-device", dest="target", default="ANY",
                   help="hardware target: ANY, CPU, GPU, NPU, ... ('ovquant plugins' lists them; default: ANY)")
    q.add_argument("--model-type", choices=["None", "Transformer", "transformer"], default=None,
                   help="Transformer: quantize as NNCF and POT do for Transformers")
    q.add_argument("--ignored-scope", action="append", metavar="NAME",
                   help="leave this node in float: an exact name or a regular expression (repeatable)")
    q.add_argument("--ignored-type", action="append", metavar="TYPE",
                   help="leave every op of this type in float, e.g. Multiply (repeatable)")
    g = q.add_argument_group("image folders", "how images become model input (as in OpenVINO's model conversion: "
                             "(pixel - mean) / scale, BGR unless --reverse-input-channels)")
    g.add_argument("--layout", help="input layout, e.g. NCHW or NHWC (default: the model's, else guessed)")
    g.add_argument("--mean", "--mean-values", dest="mean_values", metavar="VALUES",
                   help="per-channel mean subtracted from pixels 0..255, e.g. 123.675,116.28,103.53")
    g.add_argument("--scale", "--scale-values", dest="scale_values", metavar="VALUES",
                   help="per-channel divisor applied after the mean, e.g. 58.395,57.12,57.375")
    g.add_argument("--reverse-input-channels", action="store_true", help="feed RGB instead of BGR")
    q.add_argument("-n", "--name", help="output model name (default: the input's)")
    q.add_argument("-o", "--output-dir", help="output folder (default: ./results)")
    q.add_argument("--force", action="store_true",
                   help="write the model even when the output check fails (does not compile, non-finite, or "
                        "far from FP32)")
    q.add_argument("--report-html", action="store_true",
                   help="measure each quantizer's share of the output error and write NAME.report.html beside "
                        "the model (also in the JSON report)")
    q.add_argument("--max-output-error", type=float, metavar="X",
                   help="revert the worst quantizers to float until every output's relative L2 error against "
                        "FP32 is at most X on held-back calibration samples")
    q.add_argument("--skip-slow-int8", action=argparse.BooleanOptionalAction, help="keep in float the ops slower in int8, timed on this host when the target is the CPU (the default) / never")
    q.add_argument("--strict", action="store_true", help="ignored entries that match nothing are errors")
    q.add_argument("--no-cache", action="store_true", help="do not read or write the statistics cache")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.add_argument("--overwrite", action="store_true",
                   help="replace output files that ovquant did not write (or the input model itself)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog="ovquant", description="Post-training INT8 quantization for OpenVINO models: reads POT's "
                "DefaultQuantization config files, or a model and calibration data, and writes an INT8 IR.")
    p.add_argument("--version", action="version", version=f"ovquant {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    sub.add_parser("plugins", help="list registered algorithms, estimators, aggregators and hardware targets",
                   description="List every registered algorithm, range estimator, aggregator and hardware "
                               "target with the package and plugin that provide it.")

    _add_quantize_parser(sub)

    i = sub.add_parser("inspect", help="list the quantizers (FakeQuantize ops) of an IR",
                       description="List the quantizers of an IR (ovquant's, NNCF's or POT's): FakeQuantize ops "
                                   "and int8 weights, with their ranges and consumers.")
    i.add_argument("model", help="the model .xml")

    c = sub.add_parser("cache", help="the statistics cache: where it is and how big (info), or empty it (clear)",
                       description="The statistics cache keeps per-sample calibration statistics so that reruns "
                                   "skip inference. It lives in $OVQUANT_CACHE_DIR, else $XDG_CACHE_HOME/ovquant/"
                                   "statistics, else ~/.cache/ovquant/statistics, and is capped at "
                                   "$OVQUANT_CACHE_MAX_SIZE (default 2G; the oldest entries are evicted).")
    c.add_argument("action", choices=["info", "clear"], help="info: location, entries and size; clear: remove every entry")

    d = sub.add_parser("demo", help="quantize the example CNN shipped in the package and compare it to FP32",
                       description="Quantize the Fashion-MNIST CNN shipped in the package with the default "
                                   "settings and print FP32 vs INT8 accuracy, size and latency.")
    d.add_argument("-o", "--output-dir", default=None, help="where to write the INT8 model (default: a temp folder)")

    c = sub.add_parser("convert-target", help="convert a POT hardware-config file to an ovquant target file",
                       description="Convert one of POT's hardware-config files (openvino/tools/pot/configs/"
                                   "hardware/*.json, or a custom file in that format) to ovquant's target schema "
                                   "(docs/hw_targets.md). Comments and trailing commas are read as POT reads them. "
                                   "Register the result with a plugin, or name it in a config as a file.")
    c.add_argument("pot_file", metavar="POT.json", help="the POT hardware-config file")
    c.add_argument("-o", "--output", required=True, metavar="OUT.json", help="the ovquant target file to write")
    c.add_argument("--name", help="target name (default: the device)")
    c.add_argument("--device", help="the device whose POT rules apply (saturation fix, preset renaming); "
                                    "default: the file's target_device (POT's gpu.json says CPU)")
    c.add_argument("--force", action="store_true", help="replace OUT.json if it exists")
    return p


#: the last signal a handler of ovquant's received (names the exit when a C extension swallowed it)
_RECEIVED: list = []


def _on_sigint(signum, frame):
    _RECEIVED.append(signum)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # a second Ctrl-C does not interrupt the cleanup
    raise KeyboardInterrupt


def main(argv=None) -> int:
    _RECEIVED.clear()
    for stream in (sys.stdout, sys.stderr):   # a file name of undecodable bytes prints as its escapes
        getattr(stream, "reconfigure", lambda **k: None)(errors="backslashreplace")
    try:
        args = build_parser().parse_args(argv)
    except OVQuantError as exc:
        print(f"ovquant: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    handler = {"plugins": _cmd_plugins, "quantize": _cmd_quantize, "inspect": _cmd_inspect, "demo": _cmd_demo,
               "cache": _cmd_cache, "convert-target": _cmd_convert_target}[args.command]
    saved = _catch_termination()
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    warnings.simplefilter("default")
    warnings.filterwarnings("ignore", category=ResourceWarning)   # interpreter-level, not the user's business
    warnings.formatwarning = lambda msg, cat, *a, **k: f"ovquant: warning: {_one_line(msg)}\n"
    try:
        return handler(args)
    except QuantizationFailed as exc:
        print(f"ovquant: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except OVQuantError as exc:
        print(f"ovquant: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("ovquant: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Terminated:
        _ignore_signals()
        print("ovquant: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:   # a Ctrl-C inside a C extension (an import, OpenVINO) comes back as its error
        if not _caused_by_interrupt(exc) and not _RECEIVED:
            raise
        _ignore_signals()
        if _RECEIVED and _RECEIVED[-1] != signal.SIGINT:
            print("ovquant: terminated", file=sys.stderr)
            return EXIT_TERMINATED
        print("ovquant: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if argv is None:   # the process exits now: a late signal must not turn a finished run into -2
            _ignore_signals()
        else:              # called in-process: the caller's handlers again
            for signum, old in saved.items():
                try:
                    signal.signal(signum, old)
                except (ValueError, OSError, TypeError):
                    pass


def _catch_termination() -> dict:
    """SIGTERM and SIGHUP end the run like Ctrl-C does: temporaries are removed, one line, exit code 143.
    Returns the handlers found (SIGINT's included), to be restored after an in-process call."""
    def handler(signum, frame, owner=os.getpid()):
        if os.getpid() != owner: os._exit(128 + signum)   # a forked child (openvino_telemetry's): no traceback
        _RECEIVED.append(signum)
        raise _Terminated()

    saved = {}
    for signum in [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]:
        try:
            saved[signum] = signal.getsignal(signum)
            if signum != signal.SIGINT and saved[signum] in (signal.SIG_DFL, None):
                signal.signal(signum, handler)
        except (ValueError, OSError):   # not the main thread
            saved.pop(signum, None)
    return saved


def _caused_by_interrupt(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (KeyboardInterrupt, _Terminated)):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _ignore_signals() -> None:
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            try:
                signal.signal(getattr(signal, name), signal.SIG_IGN)
            except (ValueError, OSError):
                pass


if __name__ == "__main__":
    sys.exit(main())
